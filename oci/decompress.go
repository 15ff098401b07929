package oci

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// maxZstdWindow bounds the memory a zstd layer may ask for. zstd uses at
// most 8 MiB at its highest standard level; --long uses 128 MiB.
const maxZstdWindow = 128 << 20

// decompress returns a reader of the uncompressed stream, choosing gzip,
// zstd or none from the first bytes (media types are often wrong), and a
// function that frees the decompressor.
func decompress(br *bufio.Reader) (io.Reader, func(), error) {
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	default:
		return br, func() {}, nil
	}
}

// chunkPipe moves a stream from a producer goroutine to the reader in a few
// large chunks, so that decompressing (one core) and writing files (another)
// overlap. Memory is bounded by chunks × chunkSize.
type chunkPipe struct {
	full chan []byte
	free chan []byte
	done chan struct{}
	cur  []byte // the chunk being read, cur[off:] unread
	off  int
	err  error // set before full is closed
	once sync.Once
	wg   sync.WaitGroup
}

const (
	pipeChunks    = 4
	pipeChunkSize = 512 << 10
)

func newChunkPipe(src io.Reader) *chunkPipe {
	p := &chunkPipe{
		full: make(chan []byte, pipeChunks),
		free: make(chan []byte, pipeChunks),
		done: make(chan struct{}),
	}
	for range pipeChunks {
		p.free <- make([]byte, pipeChunkSize)
	}
	p.wg.Add(1)
	go p.produce(src)
	return p
}

func (p *chunkPipe) produce(src io.Reader) {
	defer p.wg.Done()
	defer close(p.full)
	for {
		var b []byte
		select {
		case b = <-p.free:
		case <-p.done:
			return
		}
		n, err := io.ReadFull(src, b[:cap(b)])
		if n > 0 {
			select {
			case p.full <- b[:n]:
			case <-p.done:
				return
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			p.err = io.EOF
			return
		}
		if err != nil {
			p.err = err
			return
		}
	}
}

func (p *chunkPipe) Read(b []byte) (int, error) {
	if p.off == len(p.cur) {
		if p.cur != nil {
			p.free <- p.cur[:cap(p.cur)] // never blocks: free holds every chunk
			p.cur = nil
		}
		c, ok := <-p.full
		if !ok {
			return 0, p.err
		}
		p.cur, p.off = c, 0
	}
	n := copy(b, p.cur[p.off:])
	p.off += n
	return n, nil
}

// close stops the producer and waits for it: the source may be closed
// afterwards.
func (p *chunkPipe) close() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
}
