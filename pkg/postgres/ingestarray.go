package postgres

import (
	"context"
	"encoding/binary"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// The flush sends its rows as seven arrays, one per column. pgx encodes a
// Go slice into an array element by element through an interface (one
// allocation and one dynamic encode per element and column: a third of the
// flush's CPU, profiled), so the flush builds each array directly in
// PostgreSQL's binary array format, and the ingester's connections send
// such a value as it is (wireArrayCodec). PostgreSQL receives exactly what
// pgx would have sent.

// wireArray is a one-dimensional PostgreSQL array, without NULLs, already
// in the binary wire format.
type wireArray []byte

// Element type OIDs of the arrays the flush sends.
const (
	oidBool = 16
	oidInt8 = 20
	oidText = 25
	oidUUID = 2950
)

// arrayBuilder appends the elements of one wireArray.
type arrayBuilder struct {
	b []byte
	n int32
}

// newArray starts an array of elements of type elemOID, with room for
// size bytes of elements.
func newArray(elemOID uint32, size int) *arrayBuilder {
	a := &arrayBuilder{b: make([]byte, 20, 20+size)}
	binary.BigEndian.PutUint32(a.b[0:], 1) // dimensions
	binary.BigEndian.PutUint32(a.b[4:], 0) // flags: no NULLs
	binary.BigEndian.PutUint32(a.b[8:], elemOID)
	// a.b[12:16]: the length, set by done; a.b[16:20]: the lower bound.
	binary.BigEndian.PutUint32(a.b[16:], 1)
	return a
}

func (a *arrayBuilder) uuid(u [16]byte) {
	a.b = binary.BigEndian.AppendUint32(a.b, 16)
	a.b = append(a.b, u[:]...)
	a.n++
}

func (a *arrayBuilder) int8(v int64) {
	a.b = binary.BigEndian.AppendUint32(a.b, 8)
	a.b = binary.BigEndian.AppendUint64(a.b, uint64(v))
	a.n++
}

func (a *arrayBuilder) text(s string) {
	a.b = binary.BigEndian.AppendUint32(a.b, uint32(len(s)))
	a.b = append(a.b, s...)
	a.n++
}

func (a *arrayBuilder) bool(v bool) {
	a.b = binary.BigEndian.AppendUint32(a.b, 1)
	if v {
		a.b = append(a.b, 1)
	} else {
		a.b = append(a.b, 0)
	}
	a.n++
}

// done returns the array. An empty one has no dimensions, as PostgreSQL
// writes it.
func (a *arrayBuilder) done() wireArray {
	if a.n == 0 {
		binary.BigEndian.PutUint32(a.b[0:], 0)
		return wireArray(a.b[:12])
	}
	binary.BigEndian.PutUint32(a.b[12:], uint32(a.n))
	return wireArray(a.b)
}

// wireArrayCodec is an array type's codec that also sends a wireArray as
// it is, in the binary format; everything else goes to the type's own
// codec.
type wireArrayCodec struct{ pgtype.Codec }

func (c wireArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(wireArray); ok && format == pgtype.BinaryFormatCode {
		return encodeWireArray{}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

type encodeWireArray struct{}

func (encodeWireArray) Encode(value any, buf []byte) ([]byte, error) {
	return append(buf, value.(wireArray)...), nil
}

// registerWireArrays lets conn send wireArrays of the flush's types.
func registerWireArrays(_ context.Context, conn *pgx.Conn) error {
	tm := conn.TypeMap()
	for _, oid := range []uint32{pgtype.BoolArrayOID, pgtype.Int8ArrayOID, pgtype.TextArrayOID, pgtype.UUIDArrayOID} {
		if t, ok := tm.TypeForOID(oid); ok {
			tm.RegisterType(&pgtype.Type{Name: t.Name, OID: oid, Codec: wireArrayCodec{t.Codec}})
		}
	}
	return nil
}
