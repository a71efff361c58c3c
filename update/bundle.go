package update

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/osguard/osguard/internal/p7"
)

// ErrUntrusted is returned when the manifest's signature does not verify
// with any of the given db certificates.
var ErrUntrusted = errors.New("update: the bundle is not signed by a certificate in db")

// Reader reads a bundle: Open has checked the header and the signature and
// holds the manifest; Next streams the payloads in order.
type Reader struct {
	Manifest *Manifest
	// Signer is the db certificate that verified the manifest.
	Signer *x509.Certificate
	// Size is the bundle's length: header, manifest, signature, payloads.
	Size int64
	// manifestSum is the sha256 of the signed manifest bytes: two reads
	// of one bundle describe the same payloads when their sums match.
	manifestSum [sha256.Size]byte
	r           io.Reader
	next        int
	cur         *PayloadReader
}

// Open reads the header, the manifest and its signature from r, and checks
// the signature against certs (the node's UEFI db) before it parses the
// manifest. No payload byte is read yet.
func Open(r io.Reader, certs []*x509.Certificate) (*Reader, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("update: bundle header: %w", truncated(err))
	}
	if string(hdr[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("update: not an osguard update bundle (magic %q, want %q)", printable(hdr[:len(Magic)]), Magic)
	}
	if v := binary.BigEndian.Uint16(hdr[14:]); v != FormatVersion {
		return nil, fmt.Errorf("update: bundle format %d, this osguard reads %d", v, FormatVersion)
	}
	mlen, slen := binary.BigEndian.Uint32(hdr[16:]), binary.BigEndian.Uint32(hdr[20:])
	if mlen == 0 || mlen > MaxManifest {
		return nil, fmt.Errorf("update: manifest of %d bytes (at most %d)", mlen, MaxManifest)
	}
	if slen < 4 || slen > MaxSignatureArea {
		return nil, fmt.Errorf("update: signature area of %d bytes (4..%d)", slen, MaxSignatureArea)
	}
	manifest := make([]byte, mlen)
	if _, err := io.ReadFull(r, manifest); err != nil {
		return nil, fmt.Errorf("update: manifest: %w", truncated(err))
	}
	sigArea := make([]byte, slen)
	if _, err := io.ReadFull(r, sigArea); err != nil {
		return nil, fmt.Errorf("update: signature: %w", truncated(err))
	}
	derLen := binary.BigEndian.Uint32(sigArea)
	if derLen == 0 || derLen > slen-4 {
		return nil, fmt.Errorf("update: signature of %d bytes in an area of %d", derLen, slen)
	}
	der := sigArea[4 : 4+derLen]
	var signer *x509.Certificate
	var lastErr error
	for _, c := range certs {
		if _, err := p7.Verify(der, manifest, c); err == nil {
			signer = c
			break
		} else {
			lastErr = err
		}
	}
	if signer == nil {
		if lastErr == nil {
			return nil, fmt.Errorf("%w (no db certificates given)", ErrUntrusted)
		}
		return nil, fmt.Errorf("%w (%d certificate(s) tried; last: %v)", ErrUntrusted, len(certs), lastErr)
	}
	m, err := ParseManifest(manifest)
	if err != nil {
		return nil, err
	}
	size := int64(headerSize) + int64(mlen) + int64(slen)
	for _, p := range m.Payloads {
		size += p.Size
	}
	return &Reader{Manifest: m, Signer: signer, r: r, Size: size, manifestSum: sha256.Sum256(manifest)}, nil
}

func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("the bundle is truncated")
	}
	return err
}

func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}

// Next returns the next payload; the previous one must have been read to
// its end. After the last payload it returns io.EOF.
func (b *Reader) Next() (*PayloadReader, error) {
	if b.cur != nil && !b.cur.done() {
		return nil, fmt.Errorf("update: payload %s not read to its end", b.cur.P.Name)
	}
	if b.next >= len(b.Manifest.Payloads) {
		return nil, io.EOF
	}
	p := b.Manifest.Payloads[b.next]
	b.next++
	b.cur = &PayloadReader{P: p, r: b.r}
	return b.cur, nil
}

// PayloadReader streams one payload. A goroutine reads the chunks ahead
// and checks each against its sha256 in the signed manifest; a chunk is
// handed out only once it matched, so reading, hashing and the caller's
// writes overlap. The chunk hashes cover every byte, so the payload's
// whole sha256 (for people and tools such as sha256sum) is not computed
// again.
type PayloadReader struct {
	P       Payload
	r       io.Reader
	started bool
	results chan chunkResult
	free    chan []byte
	quit    chan struct{}
	taken   int    // chunks handed out
	cur     []byte // the chunk being handed out: cur[off:]
	off     int
	err     error
}

type chunkResult struct {
	buf []byte
	err error
}

// prefetchDepth is how many verified chunks may wait ahead of the caller.
const prefetchDepth = 2

func (p *PayloadReader) done() bool {
	return p.taken == len(p.P.Chunks) && p.off == len(p.cur)
}

func (p *PayloadReader) start() {
	p.started = true
	p.results = make(chan chunkResult, prefetchDepth)
	p.free = make(chan []byte, prefetchDepth+1)
	p.quit = make(chan struct{})
	for range prefetchDepth + 1 {
		p.free <- make([]byte, min(p.P.Size, ChunkSize))
	}
	go p.prefetch()
}

// prefetch reads and checks the chunks in order, and stops at the first
// error or when Close is called.
func (p *PayloadReader) prefetch() {
	left := p.P.Size
	for i := range p.P.Chunks {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.quit:
			return
		}
		n := min(left, ChunkSize)
		buf = buf[:n]
		var err error
		if _, rerr := io.ReadFull(p.r, buf); rerr != nil {
			err = fmt.Errorf("update: payload %s at byte %d: %w", p.P.Name, p.P.Size-left, truncated(rerr))
		} else if sum := sha256.Sum256(buf); hex.EncodeToString(sum[:]) != p.P.Chunks[i] {
			err = fmt.Errorf("update: payload %s: chunk %d (bytes %d..%d) does not match its sha256 in the signed manifest: the bundle was modified",
				p.P.Name, i, p.P.Size-left, p.P.Size-left+n)
		}
		if err != nil {
			buf = nil
		}
		select {
		case p.results <- chunkResult{buf, err}:
		case <-p.quit:
			return
		}
		if err != nil {
			return
		}
		left -= n
	}
}

// NextChunk returns the next verified chunk, valid until the next call,
// or io.EOF after the last.
func (p *PayloadReader) NextChunk() ([]byte, error) {
	if p.err != nil {
		return nil, p.err
	}
	if p.off < len(p.cur) {
		b := p.cur[p.off:]
		p.off = len(p.cur)
		return b, nil
	}
	if p.taken == len(p.P.Chunks) {
		return nil, io.EOF
	}
	if !p.started {
		p.start()
	}
	if p.cur != nil {
		p.free <- p.cur[:cap(p.cur)]
		p.cur = nil
	}
	r := <-p.results
	if r.err != nil {
		p.err = r.err
		return nil, r.err
	}
	p.taken++
	p.cur, p.off = r.buf, len(r.buf)
	return r.buf, nil
}

// Read implements io.Reader.
func (p *PayloadReader) Read(b []byte) (int, error) {
	if p.off == len(p.cur) {
		if _, err := p.NextChunk(); err != nil {
			return 0, err
		}
		p.off = 0
	}
	n := copy(b, p.cur[p.off:])
	p.off += n
	return n, nil
}

// Err returns the error that stopped the payload: a chunk that did not
// match its hash, or a short read of the bundle; nil while it is intact.
func (p *PayloadReader) Err() error { return p.err }

// Close stops the read-ahead of a payload that will not be read to its end.
func (p *PayloadReader) Close() error {
	if p.started && p.quit != nil {
		select {
		case <-p.quit:
		default:
			close(p.quit)
		}
	}
	return nil
}

// WriteTo implements io.WriterTo: verified chunks, one write each.
func (p *PayloadReader) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		c, err := p.NextChunk()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		m, err := w.Write(c)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
}

// ReadAll reads a small payload whole.
func (p *PayloadReader) ReadAll() ([]byte, error) {
	var b bytes.Buffer
	if _, err := p.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// PackPayload is one payload to pack: Size bytes from R.
type PackPayload struct {
	Name string
	Size int64
	R    io.Reader
}

// Pack writes a bundle to w: m (without payload entries) describes it,
// payloads come in PayloadOrder. It reads each payload once: the manifest
// area is reserved with the right length first, the payloads stream
// through the hashes into w, then the manifest and its signature are
// written into the reserved area. key and cert are the db pair.
func Pack(w io.WriteSeeker, m Manifest, payloads []PackPayload, key crypto.Signer, cert *x509.Certificate) error {
	if len(payloads) != len(PayloadOrder) {
		return fmt.Errorf("update: pack: %d payloads, want %d", len(payloads), len(PayloadOrder))
	}
	m.Format, m.ChunkSize = FormatVersion, ChunkSize
	m.Payloads = make([]Payload, len(payloads))
	zero := hex.EncodeToString(make([]byte, sha256.Size))
	for i, p := range payloads {
		if p.Name != PayloadOrder[i] {
			return fmt.Errorf("update: pack: payload %d is %s, want %s", i, p.Name, PayloadOrder[i])
		}
		chunks := make([]string, (p.Size+ChunkSize-1)/ChunkSize)
		for j := range chunks {
			chunks[j] = zero
		}
		m.Payloads[i] = Payload{Name: p.Name, Size: p.Size, SHA256: zero, Chunks: chunks}
	}
	// Hex digests have a fixed length, so the placeholder manifest is
	// exactly as long as the final one.
	placeholder, err := json.Marshal(&m)
	if err != nil {
		return err
	}
	mlen := len(placeholder)
	if mlen > MaxManifest {
		return fmt.Errorf("update: pack: manifest of %d bytes exceeds %d", mlen, MaxManifest)
	}
	start, err := w.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	hdr := make([]byte, headerSize, headerSize+mlen+signatureArea)
	copy(hdr, Magic)
	binary.BigEndian.PutUint16(hdr[14:], FormatVersion)
	binary.BigEndian.PutUint32(hdr[16:], uint32(mlen))
	binary.BigEndian.PutUint32(hdr[20:], signatureArea)
	hdr = append(hdr, make([]byte, mlen+signatureArea)...)
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for i, p := range payloads {
		sum, err := streamPayload(w, p, m.Payloads[i].Chunks)
		if err != nil {
			return err
		}
		m.Payloads[i].SHA256 = sum
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("update: pack: %w", err)
	}
	final, err := json.Marshal(&m)
	if err != nil {
		return err
	}
	if len(final) != mlen {
		return fmt.Errorf("update: pack: manifest length changed from %d to %d", mlen, len(final))
	}
	der, err := p7.SignDetached(final, key, cert)
	if err != nil {
		return fmt.Errorf("update: pack: sign: %w", err)
	}
	if len(der)+4 > signatureArea {
		return fmt.Errorf("update: pack: signature of %d bytes exceeds %d", len(der), signatureArea-4)
	}
	area := make([]byte, mlen+signatureArea)
	copy(area, final)
	binary.BigEndian.PutUint32(area[mlen:], uint32(len(der)))
	copy(area[mlen+4:], der)
	if _, err := w.Seek(start+headerSize, io.SeekStart); err != nil {
		return err
	}
	if _, err := w.Write(area); err != nil {
		return err
	}
	_, err = w.Seek(0, io.SeekEnd)
	return err
}

// streamPayload copies one payload to w and fills in its chunk hashes;
// it returns the payload's sha256. Reading, the chunk hashes with the
// write, and the payload hash run in three goroutines over a small ring of
// buffers, so that pack reads its input once at about the speed of the
// slowest of them.
func streamPayload(w io.Writer, p PackPayload, chunks []string) (string, error) {
	const ring = 4
	type chunk struct {
		buf []byte
		i   int
	}
	free := make(chan []byte, ring)
	for range ring {
		free <- make([]byte, ChunkSize)
	}
	toWrite, toHash := make(chan chunk, ring), make(chan chunk, ring)
	hashed := make(chan []byte, ring) // buffers the payload hash is done with
	readErr := make(chan error, 1)
	go func() { // reader
		defer close(toWrite)
		defer close(toHash)
		left := p.Size
		for i := range chunks {
			b := <-free
			n := min(left, ChunkSize)
			if _, err := io.ReadFull(p.R, b[:n]); err != nil {
				readErr <- fmt.Errorf("update: pack: %s: %w", p.Name, err)
				return
			}
			toHash <- chunk{b[:n], i}
			toWrite <- chunk{b[:n], i}
			left -= n
		}
		readErr <- nil
	}()
	whole := sha256.New()
	go func() { // payload hash
		for c := range toHash {
			whole.Write(c.buf)
			hashed <- c.buf
		}
		close(hashed)
	}()
	var werr error
	for c := range toWrite {
		sum := sha256.Sum256(c.buf)
		chunks[c.i] = hex.EncodeToString(sum[:])
		if werr == nil {
			_, werr = w.Write(c.buf)
		}
		// The buffer is free again once the payload hash has it too.
		free <- (<-hashed)[:ChunkSize]
	}
	for range hashed {
	}
	if err := <-readErr; err != nil {
		return "", err
	}
	if werr != nil {
		return "", werr
	}
	return hex.EncodeToString(whole.Sum(nil)), nil
}
