// Package feed connects the packets of a channel to the one continuous
// compression stream QEMU's zlib and zstd methods keep per channel for the
// whole migration, flushed at the end of every packet: [Feed] serves the
// payloads to a streaming decoder, [Prepare] runs a streaming encoder over
// a packet's pages into the payload.
package feed

import (
	"errors"
	"fmt"
	"io"
)

// ErrShort is returned by Read once the current packet's payload is used
// up: the decoder wanted more bytes than the packet carried.
var ErrShort = errors.New("payload ends before the packet's pages are complete")

// ErrExtra reports a payload that decodes to more than the packet's pages.
var ErrExtra = errors.New("payload decodes to more than the packet's pages")

// needInput unwinds a decoder that asks for bytes past the current
// payload, during Fill: an error would stick in the decoder and break the
// stream for the next packet, a panic leaves it where it stopped.
type needInput struct{}

// dry is what Read panics with (a pointer: no allocation).
var dry = &needInput{}

// Feed serves the bytes a decoder has not consumed yet from earlier
// packets, then the current packet's payload. It implements io.ByteReader
// so that flate consumes exactly what it decodes and never reads ahead.
type Feed struct {
	rest   []byte // unconsumed bytes of earlier packets, owned
	cur    []byte // the current payload, borrowed for one packet
	strict bool   // Fill is running: running dry unwinds the decoder
	one    [1]byte
}

// Start makes payload the current packet's bytes. payload is only read
// until End.
func (f *Feed) Start(payload []byte) { f.cur = payload }

// End keeps what the decoder left of the current packet for the next one
// and returns how many bytes that is.
func (f *Feed) End() int {
	f.rest = append(f.rest, f.cur...)
	f.cur = nil
	return len(f.rest)
}

// Read implements io.Reader.
func (f *Feed) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(f.rest) > 0 {
		n := copy(p, f.rest)
		f.rest = f.rest[:copy(f.rest, f.rest[n:])]
		return n, nil
	}
	if len(f.cur) == 0 {
		if f.strict {
			panic(dry)
		}
		return 0, ErrShort
	}
	n := copy(p, f.cur)
	f.cur = f.cur[n:]
	return n, nil
}

// ReadByte implements io.ByteReader.
func (f *Feed) ReadByte() (byte, error) {
	if len(f.rest) > 0 {
		b := f.rest[0]
		f.rest = f.rest[:copy(f.rest, f.rest[1:])]
		return b, nil
	}
	if len(f.cur) == 0 {
		if f.strict {
			panic(dry)
		}
		return 0, ErrShort
	}
	b := f.cur[0]
	f.cur = f.cur[1:]
	return b, nil
}

var _ io.ByteReader = (*Feed)(nil)

// Fill reads the current packet's pages from dec, a streaming decoder
// reading from f, then checks that the payload decodes to nothing more:
// it asks dec for one more byte, which a well-formed payload answers by
// running dry at the packet's flush boundary. It returns ErrShort or
// ErrExtra (wrapped) for a payload that is too short or too long. After
// any error dec's state is undefined: the caller must not use it again.
func (f *Feed) Fill(dec io.Reader, pages [][]byte) error {
	f.strict = true
	defer func() { f.strict = false }()
	for i, pg := range pages {
		if err := readFull(dec, pg); err != nil {
			return fmt.Errorf("page %d of %d: %w", i, len(pages), err)
		}
	}
	if n, err := probe(dec, f.one[:]); n > 0 {
		return ErrExtra
	} else if err != nil {
		return err
	}
	return nil
}

func readFull(dec io.Reader, p []byte) (err error) {
	defer func() {
		if x := recover(); x != nil {
			if x != dry {
				panic(x)
			}
			err = ErrShort
		}
	}()
	_, err = io.ReadFull(dec, p)
	return err
}

// probe reads from dec; running dry is the good answer (0, nil).
func probe(dec io.Reader, p []byte) (n int, err error) {
	defer func() {
		if x := recover(); x != nil {
			if x != dry {
				panic(x)
			}
			n, err = 0, nil
		}
	}()
	return dec.Read(p)
}

// Sink appends what an encoder writes to a slice it does not own.
type Sink struct{ b []byte }

// Write implements io.Writer.
func (s *Sink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// Encoder is a streaming compressor whose Flush ends the output on a
// boundary the decoder can stop at without the rest of the stream.
type Encoder interface {
	io.Writer
	Flush() error
}

// Prepare writes pages through w, an encoder writing to sink, flushes it,
// and returns dst with the compressed bytes appended.
func Prepare(w Encoder, sink *Sink, pages [][]byte, dst []byte) ([]byte, error) {
	sink.b = dst
	defer func() { sink.b = nil }()
	for _, pg := range pages {
		if _, err := w.Write(pg); err != nil {
			return dst, err
		}
	}
	if err := w.Flush(); err != nil {
		return dst, err
	}
	return sink.b, nil
}
