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
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/internal/p7"
	"github.com/osguard/osguard/verity"
)

// ErrUntrusted is returned when the manifest's signature does not verify
// with any of the given db certificates.
var ErrUntrusted = errors.New("update: the bundle is not signed by a certificate in db")

// Reader reads a bundle: Open has checked the header and the signature and
// holds the manifest; Next streams the payloads in order, each chunk
// checked before it is handed out.
type Reader struct {
	Manifest *Manifest
	// Signer is the db certificate that verified the manifest.
	Signer *x509.Certificate
	// Size is the bundle's length: header, manifest, signature, payloads
	// and the padding before each.
	Size    int64
	offsets []int64 // where each payload starts
	src     chunkSource
	next    int
	cur     *PayloadReader
	// tree checks the usr payload; it is set once the usr-verity payload
	// was read and checked against the manifest's root hash.
	tree        *verity.Checker
	verityImage []byte
}

// Open reads the header, the manifest and its signature from r, and checks
// the signature against certs (the node's UEFI db) before it parses the
// manifest. No payload byte is read yet. When r is also an io.ReaderAt
// (a file, a block device), payloads are read at their offsets, several
// chunks at a time; otherwise r is read as a stream.
func Open(r io.Reader, certs []*x509.Certificate) (*Reader, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("update: bundle header: %w", truncated(err))
	}
	if string(hdr[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("update: not an osguard update bundle (magic %q, want %q)", printable(hdr[:len(Magic)]), Magic)
	}
	if v := binary.BigEndian.Uint16(hdr[14:]); v != FormatVersion {
		return nil, fmt.Errorf("update: bundle format %d, this osguard reads %d (pack it again with this osguard)", v, FormatVersion)
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
	pos := int64(headerSize) + int64(mlen) + int64(slen)
	b := &Reader{Manifest: m, Signer: signer}
	b.offsets, b.Size = m.payloadOffsets(pos)
	if ra, ok := r.(io.ReaderAt); ok {
		b.src = atSource{ra}
	} else {
		b.src = &streamSource{r: r, pos: pos}
	}
	return b, nil
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

// chunkSource reads the bundle's bytes at an offset.
type chunkSource interface {
	readAt(b []byte, off int64) error
	// parallel says whether reads at several offsets may run at once.
	parallel() bool
}

// atSource reads a file or block device in place.
type atSource struct{ r io.ReaderAt }

func (s atSource) readAt(b []byte, off int64) error {
	n, err := s.r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (atSource) parallel() bool { return true }

// streamSource reads a stream (a download being spooled) in order,
// skipping the padding between payloads.
type streamSource struct {
	r   io.Reader
	pos int64
}

func (s *streamSource) readAt(b []byte, off int64) error {
	if off < s.pos {
		return fmt.Errorf("update: a stream cannot go back from byte %d to %d", s.pos, off)
	}
	if off > s.pos {
		n, err := io.CopyN(io.Discard, s.r, off-s.pos)
		s.pos += n
		if err != nil {
			return err
		}
	}
	n, err := io.ReadFull(s.r, b)
	s.pos += int64(n)
	return err
}

func (*streamSource) parallel() bool { return false }

// Next returns the next payload; the previous one must have been read to
// its end. After the last payload it returns io.EOF.
//
// The usr-verity payload is read whole here (it is at most
// maxVerityPayload) and its tree checked from the manifest's root hash
// down; the usr payload that follows is then checked block by block
// against it. The returned reader of usr-verity serves the checked bytes.
func (b *Reader) Next() (*PayloadReader, error) {
	if b.cur != nil && !b.cur.done() {
		return nil, fmt.Errorf("update: payload %s not read to its end", b.cur.P.Name)
	}
	if b.next >= len(b.Manifest.Payloads) {
		return nil, io.EOF
	}
	i := b.next
	b.next++
	p := b.Manifest.Payloads[i]
	if p.Name == PayloadUsr && b.tree == nil {
		return nil, errors.New("update: the usr payload comes before its hash tree")
	}
	b.cur = newPayloadReader(p, b.offsets[i], b.src, b.check(p))
	if p.Name != PayloadVerity {
		return b.cur, nil
	}
	img, err := b.cur.ReadAll()
	if err != nil {
		return nil, err
	}
	if err := b.setTree(img); err != nil {
		return nil, err
	}
	b.cur = newPayloadReader(p, 0, atSource{bytes.NewReader(img)}, nil)
	return b.cur, nil
}

// check returns how each chunk of payload p is checked: against its
// sha256 in the manifest, or, for usr, against the hash tree.
func (b *Reader) check(p Payload) func(i int, c []byte) error {
	if p.Name == PayloadUsr {
		tree := b.tree
		return func(i int, c []byte) error {
			if err := tree.Check(c, int64(i)*ChunkSize); err != nil {
				return fmt.Errorf("update: payload usr: chunk %d (bytes %d..%d): %w: the bundle was modified", i, int64(i)*ChunkSize, int64(i)*ChunkSize+int64(len(c)), err)
			}
			return nil
		}
	}
	return func(i int, c []byte) error {
		if sum := sha256.Sum256(c); hex.EncodeToString(sum[:]) != p.Chunks[i] {
			return fmt.Errorf("update: payload %s: chunk %d (bytes %d..%d) does not match its sha256 in the signed manifest: the bundle was modified",
				p.Name, i, int64(i)*ChunkSize, int64(i)*ChunkSize+int64(len(c)))
		}
		return nil
	}
}

// setTree checks the usr-verity payload: a dm-verity hash device
// (superblock and tree) of the parameters osguard builds, for as many
// blocks as the usr payload has, under the manifest's root hash.
func (b *Reader) setTree(img []byte) error {
	sb, err := verity.ParseSuperblock(img)
	if err != nil {
		return fmt.Errorf("update: usr-verity: %w", err)
	}
	usr := b.Manifest.Payload(PayloadUsr)
	switch {
	case sb.Algorithm != "sha256" || sb.DataBlockSize != Align || sb.HashBlockSize != Align:
		return fmt.Errorf("update: usr-verity: a %s tree of %d/%d-byte blocks, osguard builds sha256 over 4096", sb.Algorithm, sb.DataBlockSize, sb.HashBlockSize)
	case int64(sb.DataBlocks)*Align != usr.Size:
		return fmt.Errorf("update: usr-verity covers %d blocks, the usr payload has %d bytes", sb.DataBlocks, usr.Size)
	}
	tree, err := verity.NewChecker(img, b.Manifest.RootHash(), verity.Params{})
	if err != nil {
		return fmt.Errorf("update: usr-verity does not hold the tree of the signed root hash %s: %w", b.Manifest.Usr.RootHash, err)
	}
	if verity.HashDeviceSize(tree.Params()) != int64(len(img)) {
		return fmt.Errorf("update: usr-verity has %d bytes, its tree %d", len(img), verity.HashDeviceSize(tree.Params()))
	}
	b.tree, b.verityImage = tree, img
	return nil
}

// Offset returns where the named payload starts in the bundle.
func (b *Reader) Offset(name string) (int64, bool) {
	for i, p := range b.Manifest.Payloads {
		if p.Name == name {
			return b.offsets[i], true
		}
	}
	return 0, false
}

// VerityImage returns the checked usr-verity payload once Next has passed
// it.
func (b *Reader) VerityImage() []byte { return b.verityImage }

// PayloadAt returns a reader of the named payload read again from ra,
// which holds the same bundle, at the payload's offset: apply's write
// pass. With check, every chunk is checked as in Next (usr once Next has
// passed usr-verity); without, the caller vouches that ra holds the bytes
// that were checked.
func (b *Reader) PayloadAt(ra io.ReaderAt, name string, check bool) (*PayloadReader, error) {
	for i, p := range b.Manifest.Payloads {
		if p.Name != name {
			continue
		}
		var fn func(int, []byte) error
		if check {
			if p.Name == PayloadUsr && b.tree == nil {
				return nil, errors.New("update: usr cannot be checked before its hash tree was read")
			}
			fn = b.check(p)
		}
		return newPayloadReader(p, b.offsets[i], atSource{ra}, fn), nil
	}
	return nil, fmt.Errorf("update: no payload %s", name)
}

// PayloadReader streams one payload. Goroutines read the chunks ahead and
// check them (on every core when the bundle is read in place); a chunk is
// handed out only once it matched, in order, so reading, hashing and the
// caller's writes overlap.
type PayloadReader struct {
	P       Payload
	off     int64 // of the payload in the bundle
	src     chunkSource
	check   func(i int, c []byte) error // nil: not checked
	chunks  int
	started bool
	ordered chan *chunkJob
	free    chan []byte
	quit    chan struct{}
	taken   int    // chunks handed out
	cur     []byte // the chunk being handed out: cur[pos:]
	pos     int
	err     error
}

// chunkJob is one chunk on its way to the caller.
type chunkJob struct {
	i   int
	buf []byte
	res chan error
}

func newPayloadReader(p Payload, off int64, src chunkSource, check func(int, []byte) error) *PayloadReader {
	return &PayloadReader{P: p, off: off, src: src, check: check, chunks: int((p.Size + ChunkSize - 1) / ChunkSize)}
}

func (p *PayloadReader) done() bool {
	return p.taken == p.chunks && p.pos == len(p.cur)
}

func (p *PayloadReader) start() {
	p.started = true
	workers := 1
	if p.src.parallel() && p.check != nil {
		workers = runtime.GOMAXPROCS(0)
	}
	depth := workers + 2
	p.ordered = make(chan *chunkJob, depth)
	p.free = make(chan []byte, depth+1)
	p.quit = make(chan struct{})
	for range depth + 1 {
		p.free <- alignedBuf(int(min(p.P.Size, ChunkSize)))
	}
	work := make(chan *chunkJob, depth)
	for range workers {
		go func() {
			for j := range work {
				j.res <- p.check(j.i, j.buf)
			}
		}()
	}
	go p.prefetch(work)
}

// prefetch reads the chunks in order and hands them to the checkers, and
// stops at the first error or when Close is called.
func (p *PayloadReader) prefetch(work chan<- *chunkJob) {
	defer close(work)
	for i := range p.chunks {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.quit:
			return
		}
		at := int64(i) * ChunkSize
		buf = buf[:min(p.P.Size-at, ChunkSize)]
		j := &chunkJob{i: i, buf: buf, res: make(chan error, 1)}
		if err := p.src.readAt(buf, p.off+at); err != nil {
			j.res <- fmt.Errorf("update: payload %s at byte %d: %w", p.P.Name, at, truncated(err))
		} else if p.check == nil {
			j.res <- nil
		} else {
			select {
			case work <- j:
			case <-p.quit:
				return
			}
		}
		select {
		case p.ordered <- j:
		case <-p.quit:
			return
		}
	}
}

// NextChunk returns the next checked chunk, valid until the next call,
// or io.EOF after the last.
func (p *PayloadReader) NextChunk() ([]byte, error) {
	if p.err != nil {
		return nil, p.err
	}
	if p.pos < len(p.cur) {
		b := p.cur[p.pos:]
		p.pos = len(p.cur)
		return b, nil
	}
	if p.taken == p.chunks {
		return nil, io.EOF
	}
	if !p.started {
		p.start()
	}
	if p.cur != nil {
		p.free <- p.cur[:cap(p.cur)]
		p.cur = nil
	}
	j := <-p.ordered
	if err := <-j.res; err != nil {
		p.err = err
		p.Close()
		return nil, err
	}
	p.taken++
	p.cur, p.pos = j.buf, len(j.buf)
	return j.buf, nil
}

// Read implements io.Reader.
func (p *PayloadReader) Read(b []byte) (int, error) {
	if p.pos == len(p.cur) {
		if _, err := p.NextChunk(); err != nil {
			return 0, err
		}
		p.pos = 0
	}
	n := copy(b, p.cur[p.pos:])
	p.pos += n
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

// WriteTo implements io.WriterTo: checked chunks, one write each.
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
	b := bytes.NewBuffer(make([]byte, 0, p.P.Size))
	if _, err := p.WriteTo(b); err != nil {
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
//
// usr is not hashed here: the usr-verity payload, made by the build, is
// its hash. When w is an *os.File and usr's R an *io.SectionReader of
// one, usr is copied by copy_file_range, in the kernel (and shared, not
// copied, on a file system with reflinks).
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
		if p.Name == PayloadUsr {
			m.Payloads[i] = Payload{Name: p.Name, Size: p.Size}
			continue
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
	pos := int64(len(hdr))
	for i, p := range payloads {
		if pad := alignUp(pos) - pos; pad > 0 {
			if _, err := w.Write(make([]byte, pad)); err != nil {
				return err
			}
			pos += pad
		}
		if p.Name == PayloadUsr {
			if err := copyPayload(w, p); err != nil {
				return fmt.Errorf("update: pack: %s: %w", p.Name, err)
			}
		} else {
			sum, err := streamPayload(w, p, m.Payloads[i].Chunks)
			if err != nil {
				return err
			}
			m.Payloads[i].SHA256 = sum
		}
		pos += p.Size
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

// copyPayload copies p to w unhashed: by copy_file_range from file to
// file when it can, else through a buffer.
func copyPayload(w io.WriteSeeker, p PackPayload) error {
	if dst, ok := w.(*os.File); ok {
		if sr, ok := p.R.(*io.SectionReader); ok {
			if src, off, n := sr.Outer(); n == p.Size {
				if f, ok := src.(*os.File); ok {
					done, err := copyFileRange(dst, f, off, p.Size)
					if err == nil {
						return nil
					}
					if done > 0 || !errors.Is(err, errors.ErrUnsupported) {
						return err
					}
				}
			}
		}
	}
	n, err := io.CopyBuffer(w, io.LimitReader(p.R, p.Size), make([]byte, ChunkSize))
	if err == nil && n != p.Size {
		err = fmt.Errorf("%d bytes of %d", n, p.Size)
	}
	return err
}

// copyFileRange copies n bytes of src at off to dst's current offset,
// and leaves dst's offset after them. It returns errors.ErrUnsupported,
// having copied nothing, where the kernel or file systems cannot.
func copyFileRange(dst, src *os.File, off, n int64) (int64, error) {
	woff, err := dst.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	var done int64
	for done < n {
		k, err := unix.CopyFileRange(int(src.Fd()), &off, int(dst.Fd()), &woff, int(min(n-done, 1<<30)), 0)
		if err != nil {
			if done == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
				return 0, errors.ErrUnsupported
			}
			return done, err
		}
		if k == 0 {
			return done, fmt.Errorf("%w: the source ends %d bytes early", io.ErrUnexpectedEOF, n-done)
		}
		done += int64(k)
	}
	_, err = dst.Seek(woff, io.SeekStart)
	return done, err
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
