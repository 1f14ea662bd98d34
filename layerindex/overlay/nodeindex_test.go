package overlay

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// nodeIndex against a map, through inserts, removals and the rehashes they cause.
func TestNodeIndex(t *testing.T) {
	type key struct {
		parent int32
		name   string
	}
	rng := rand.New(rand.NewPCG(5, 5))
	var nodes []tnode
	x := newNodeIndex(4)
	want := map[key]int32{}
	for step := range 20000 {
		k := key{int32(rng.IntN(50)), fmt.Sprint(rng.IntN(200))}
		id, ok := x.find(nodes, k.parent, k.name)
		if wid, wok := want[k]; ok != wok || ok && id != wid {
			t.Fatalf("step %d: find %v = %d %v, want %d %v", step, k, id, ok, wid, wok)
		}
		switch {
		case ok && rng.IntN(2) == 0:
			x.remove(nodes, id)
			delete(want, k)
		case !ok:
			nodes = append(nodes, tnode{parent: k.parent, name: k.name})
			id := int32(len(nodes) - 1)
			x.insert(nodes, id)
			want[k] = id
		}
		if x.live != len(want) || x.used > len(x.slots)*3/4 {
			t.Fatalf("step %d: %d live (want %d), %d of %d slots used", step, x.live, len(want), x.used, len(x.slots))
		}
	}
}
