package layerindex

import (
	"fmt"
	"iter"
	"math"
	"slices"
	"time"
)

// TOC is the table of contents of a layer's tar: its entries in stream order, packed. A
// mount holds the TOC of every layer it serves and an import builds one per layer, so at a
// million entries the per-entry cost is what matters: an entry takes a fixed tocRec plus
// the bytes of its name, and shares its owner and link target with the entries that have
// the same; what is rare (sub-second times, devices, PAX records, odd modes) lives in a
// side table.
//
// A TOC is immutable once built and safe for concurrent use. The zero value and a nil *TOC
// hold no entries. Two TOCs built from the same entries in the same order, by Build,
// NewTOC or decoding an index written by MarshalBinary, are reflect.DeepEqual.
type TOC struct {
	n      int
	chunks []tocChunk
	owners []tocOwner
	// strs holds unames, gnames, link targets and PAX keys and values: the string table of
	// the index file, as read from it or in order of first use.
	strs   []string
	extras []tocExtra
}

// Entries are stored in chunks of tocChunkSize so that a TOC growing in Build never copies
// what it holds, and so that a name's position fits in 32 bits: a tar name is at most 1 MiB
// (archive/tar's limit on a PAX or GNU long name), a chunk's names at most 1 GiB.
const (
	tocChunkBits = 10
	tocChunkSize = 1 << tocChunkBits
	tocChunkMask = tocChunkSize - 1
)

type tocChunk struct {
	recs  []tocRec
	names string // the names of recs, one after the other
}

// tocRec is one entry, 48 bytes.
type tocRec struct {
	mtime  int64 // seconds since the Unix epoch
	size   int64
	offset int64
	name   uint32 // end of the name in its chunk's names; it starts where the previous one ends
	owner  uint32 // index in owners
	link   uint32 // 1 + index in strs of the link target; 0: none
	extra  uint32 // 1 + index in extras; 0: none
	mode   int32  // unless the extra has it
	typ    byte
}

type tocOwner struct {
	uid, gid     int
	uname, gname uint32 // indexes in strs
}

// zeroOwner is uid and gid 0 with empty names, as a decoder builds it: what the first
// entry of an index file says when it has the owner of the entry "before" it. The
// empty string is the first one in strs (a decoder adds one when there is none).
func (t *TOC) zeroOwner() tocOwner {
	i := slices.Index(t.strs, "")
	if i < 0 {
		i = len(t.strs)
	}
	return tocOwner{uname: uint32(i), gname: uint32(i)}
}

// tocExtra is what few entries have.
type tocExtra struct {
	nsec               int32 // of the mtime
	fullMode           bool  // the mode is mode, not the record's (it does not fit in an int32)
	mode               int64
	devmajor, devminor int64
	pax                []Record // nil or not, as the entry's PAXRecords
	paxRefs            []uint32 // key, value: the records' indexes in strs
}

// Len returns the number of entries.
func (t *TOC) Len() int {
	if t == nil {
		return 0
	}
	return t.n
}

func (t *TOC) rec(i int) (*tocChunk, *tocRec, int) {
	c := &t.chunks[i>>tocChunkBits]
	j := i & tocChunkMask
	return c, &c.recs[j], j
}

// name returns the name of entry j of chunk c.
func (c *tocChunk) name(j int) string {
	start := uint32(0)
	if j > 0 {
		start = c.recs[j-1].name
	}
	return c.names[start:c.recs[j].name]
}

// At returns entry i, 0 <= i < Len(). It does not allocate: the strings and the PAXRecords
// slice are shared with the TOC and must not be modified.
func (t *TOC) At(i int) Entry {
	c, r, j := t.rec(i)
	o := &t.owners[r.owner]
	e := Entry{
		Name:   c.name(j),
		Type:   r.typ,
		Mode:   int64(r.mode),
		UID:    o.uid,
		GID:    o.gid,
		Uname:  t.strs[o.uname],
		Gname:  t.strs[o.gname],
		Size:   r.size,
		Offset: r.offset,
	}
	if r.link != 0 {
		e.Linkname = t.strs[r.link-1]
	}
	var nsec int64
	if r.extra != 0 {
		x := &t.extras[r.extra-1]
		nsec = int64(x.nsec)
		if x.fullMode {
			e.Mode = x.mode
		}
		e.Devmajor, e.Devminor, e.PAXRecords = x.devmajor, x.devminor, x.pax
	}
	e.ModTime = time.Unix(r.mtime, nsec).UTC()
	return e
}

// Name returns the name of entry i as the tar gives it.
func (t *TOC) Name(i int) string {
	c, _, j := t.rec(i)
	return c.name(j)
}

// Type returns the tar typeflag of entry i.
func (t *TOC) Type(i int) byte {
	_, r, _ := t.rec(i)
	return r.typ
}

// Linkname returns the link target of entry i, "" if it has none.
func (t *TOC) Linkname(i int) string {
	_, r, _ := t.rec(i)
	if r.link == 0 {
		return ""
	}
	return t.strs[r.link-1]
}

// All yields every entry with its index, in stream order.
func (t *TOC) All() iter.Seq2[int, Entry] {
	return func(yield func(int, Entry) bool) {
		for i := range t.Len() {
			if !yield(i, t.At(i)) {
				return
			}
		}
	}
}

// Entries returns a copy of every entry, nil for a nil TOC: for tests and small tables.
func (t *TOC) Entries() []Entry {
	if t == nil {
		return nil
	}
	out := make([]Entry, t.n)
	for i := range out {
		out[i] = t.At(i)
	}
	return out
}

// NewTOC packs entries: for tests and callers that make up small tables. The TOC keeps the
// entries' strings but neither the slice nor the PAXRecords slices. A ModTime keeps its
// instant only (At gives it in UTC). NewTOC panics on names that do not pack (over 4 GiB
// for 1024 entries), which no tar holds.
func NewTOC(entries []Entry) *TOC {
	var b tocBuilder
	for i := range entries {
		e := entries[i]
		e.PAXRecords = slices.Clone(e.PAXRecords)
		if err := b.add(&e); err != nil {
			panic(fmt.Sprintf("layerindex: NewTOC: entry %d: %v", i, err))
		}
	}
	return b.finish()
}

// tocBuilder appends entries to a TOC: Build and NewTOC through add, the index decoder
// through owner and push.
type tocBuilder struct {
	t     TOC
	cur   []tocRec // the chunk being filled
	names []byte   // its names
	sized bool     // reserve said how many entries are to come
	left  int      // how many are still to come, if sized

	strIdx    map[string]uint32
	ownIdx    map[tocOwner]uint32
	lastOwner tocOwner
	lastIdx   uint32
	hasLast   bool
	// The previous entry's owner as add was given it, whose strings are interned.
	lastUID, lastGID     int
	lastUname, lastGname string
}

// reserve says that n more entries are to come, so that chunks are allocated to size.
func (b *tocBuilder) reserve(n int) { b.sized, b.left = true, n }

// intern returns the index of s in strs, adding it if it is not there.
func (b *tocBuilder) intern(s string) uint32 {
	if i, ok := b.strIdx[s]; ok {
		return i
	}
	if b.strIdx == nil {
		b.strIdx = make(map[string]uint32)
	}
	i := uint32(len(b.t.strs))
	b.strIdx[s] = i
	b.t.strs = append(b.t.strs, s)
	return i
}

// owner returns the index of o in owners, adding it if it is not there.
func (b *tocBuilder) owner(o tocOwner) uint32 {
	if b.hasLast && o == b.lastOwner {
		return b.lastIdx
	}
	i, ok := b.ownIdx[o]
	if !ok {
		if b.ownIdx == nil {
			b.ownIdx = make(map[tocOwner]uint32)
		}
		i = uint32(len(b.t.owners))
		b.ownIdx[o] = i
		b.t.owners = append(b.t.owners, o)
	}
	b.lastOwner, b.lastIdx, b.hasLast = o, i, true
	return i
}

// zeroOwner returns the zero owner (see TOC.zeroOwner), adding an empty string to strs
// if it has none.
func (b *tocBuilder) zeroOwner() tocOwner {
	if slices.Index(b.t.strs, "") < 0 {
		b.t.strs = append(b.t.strs, "")
	}
	return b.t.zeroOwner()
}

// add appends e, interning its strings in the order MarshalBinary's string table has
// always had them: uname, gname, link target, PAX keys and values. It keeps e.PAXRecords.
func (b *tocBuilder) add(e *Entry) error {
	r := tocRec{mtime: e.ModTime.Unix(), size: e.Size, offset: e.Offset, typ: e.Type}
	if !b.hasLast || e.UID != b.lastUID || e.GID != b.lastGID || e.Uname != b.lastUname || e.Gname != b.lastGname {
		o := tocOwner{uid: e.UID, gid: e.GID, uname: b.intern(e.Uname), gname: b.intern(e.Gname)}
		b.owner(o)
		b.lastUID, b.lastGID, b.lastUname, b.lastGname = e.UID, e.GID, e.Uname, e.Gname
	}
	r.owner = b.lastIdx
	if e.Linkname != "" {
		r.link = b.intern(e.Linkname) + 1
	}
	var x tocExtra
	if int64(int32(e.Mode)) == e.Mode {
		r.mode = int32(e.Mode)
	} else {
		x.fullMode, x.mode = true, e.Mode
	}
	x.nsec = int32(e.ModTime.Nanosecond())
	x.devmajor, x.devminor = e.Devmajor, e.Devminor
	if e.PAXRecords != nil {
		x.pax = e.PAXRecords
		x.paxRefs = make([]uint32, 0, 2*len(e.PAXRecords))
		for _, rec := range e.PAXRecords {
			x.paxRefs = append(x.paxRefs, b.intern(rec.Key), b.intern(rec.Value))
		}
	}
	b.names = append(b.names, e.Name...)
	return b.push(r, &x)
}

// push appends r, whose name has just been appended to b.names, and x unless it is zero.
func (b *tocBuilder) push(r tocRec, x *tocExtra) error {
	if len(b.names) > math.MaxUint32 {
		return fmt.Errorf("names of entries %d to %d total over 4 GiB", b.t.n&^tocChunkMask, b.t.n)
	}
	r.name = uint32(len(b.names))
	if x.nsec != 0 || x.fullMode || x.devmajor != 0 || x.devminor != 0 || x.pax != nil {
		b.t.extras = append(b.t.extras, *x)
		r.extra = uint32(len(b.t.extras))
	}
	if b.cur == nil {
		switch {
		case b.sized:
			b.cur = make([]tocRec, 0, max(1, min(b.left, tocChunkSize)))
		case b.t.n >= tocChunkSize: // a big TOC: every chunk but the last is full
			b.cur = make([]tocRec, 0, tocChunkSize)
		}
	}
	b.cur = append(b.cur, r)
	b.t.n++
	b.left--
	if len(b.cur) == tocChunkSize {
		b.flush()
	}
	return nil
}

func (b *tocBuilder) flush() {
	recs := b.cur
	if cap(recs)-len(recs) > len(recs)/8 {
		recs = slices.Clone(recs)
	}
	b.t.chunks = append(b.t.chunks, tocChunk{recs: recs, names: string(b.names)})
	b.cur, b.names = nil, b.names[:0]
}

// finish returns the TOC; the builder must not be used again.
func (b *tocBuilder) finish() *TOC {
	if len(b.cur) > 0 {
		b.flush()
	}
	t := b.t
	return &t
}
