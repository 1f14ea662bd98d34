package overlay

import "hash/maphash"

// nodeIndex finds the live nodes of a builder by parent and name: an open-addressing hash
// table of node ids whose keys are the nodes' own fields. A Go map would hold every key
// again, and at a million entries it was the biggest thing a merge allocates.
type nodeIndex struct {
	seed  maphash.Seed
	slots []int32 // a node id, slotEmpty or slotRemoved; len is a power of two
	used  int     // slots not empty
	live  int     // slots holding a node
}

const (
	slotEmpty   = -1
	slotRemoved = -2
)

func newNodeIndex(n int) nodeIndex {
	x := nodeIndex{seed: maphash.MakeSeed()}
	x.slots = emptySlots(n)
	return x
}

// emptySlots makes a table that holds n nodes at most half full.
func emptySlots(n int) []int32 {
	size := 16
	for size < 2*n {
		size <<= 1
	}
	s := make([]int32, size)
	for i := range s {
		s[i] = slotEmpty
	}
	return s
}

func (x *nodeIndex) start(parent int32, name string) int {
	h := maphash.String(x.seed, name) ^ uint64(uint32(parent))*0x9e3779b97f4a7c15
	return int(h) & (len(x.slots) - 1)
}

// find returns the live node called name in parent.
func (x *nodeIndex) find(nodes []tnode, parent int32, name string) (int32, bool) {
	mask := len(x.slots) - 1
	for i := x.start(parent, name); ; i = (i + 1) & mask {
		id := x.slots[i]
		if id == slotEmpty {
			return -1, false
		}
		if id >= 0 && nodes[id].parent == parent && nodes[id].name == name {
			return id, true
		}
	}
}

// insert adds node id, which no live node shares parent and name with.
func (x *nodeIndex) insert(nodes []tnode, id int32) {
	if 4*(x.used+1) > 3*len(x.slots) {
		x.rehash(nodes)
	}
	n := &nodes[id]
	mask := len(x.slots) - 1
	i := x.start(n.parent, n.name)
	for x.slots[i] >= 0 {
		i = (i + 1) & mask
	}
	if x.slots[i] == slotEmpty {
		x.used++
	}
	x.slots[i] = id
	x.live++
}

// remove takes node id out, which must be in.
func (x *nodeIndex) remove(nodes []tnode, id int32) {
	n := &nodes[id]
	mask := len(x.slots) - 1
	i := x.start(n.parent, n.name)
	for x.slots[i] != id {
		i = (i + 1) & mask
	}
	x.slots[i] = slotRemoved
	x.live--
}

// rehash moves the live nodes to a table sized for them, dropping the removed slots.
func (x *nodeIndex) rehash(nodes []tnode) {
	old := x.slots
	x.slots = emptySlots(x.live + 1)
	x.used, x.live = 0, 0
	for _, id := range old {
		if id >= 0 {
			x.insert(nodes, id)
		}
	}
}
