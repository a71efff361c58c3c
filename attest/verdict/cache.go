package verdict

import (
	"crypto/sha256"
	"sync"

	"github.com/google/go-attestation/attest"
)

// Cache remembers event-log replays. A node attests again and again with
// the same log and PCRs until it reboots: only the quote (over a new nonce)
// needs checking each time. The key is the sha256 of the log and of every
// PCR value the replay used, so a hit is the replay itself. The zero Cache
// is ready; it holds at most MaxCacheEntries.
//
// It also remembers parsed attestation keys, by their TPMT_PUBLIC bytes:
// the verifier checks every quote of a node with the one AK bound to it.
type Cache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte][]attest.Event

	aks akCache
}

// MaxCacheEntries bounds a Cache: a replay's events are a few KiB, so a
// fleet of this many booted nodes costs tens of MiB at most.
const MaxCacheEntries = 8192

// Check is the package's Check with replays remembered.
func (c *Cache) Check(ev Evidence, policies []*Policy) (Result, error) {
	pcrs, err := authenticPCRs(ev, &c.aks)
	if err != nil {
		return Result{}, err
	}
	h := sha256.New()
	h.Write(ev.EventLog)
	for _, p := range pcrs {
		if p.Index != 11 {
			h.Write(p.Digest)
		}
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	c.mu.Lock()
	events, ok := c.m[key]
	c.mu.Unlock()
	if !ok {
		if events, err = replay(ev.EventLog, pcrs); err != nil {
			return Result{}, err
		}
		c.mu.Lock()
		if c.m == nil {
			c.m = map[[sha256.Size]byte][]attest.Event{}
		}
		if len(c.m) >= MaxCacheEntries {
			for k := range c.m { // evict one, whichever
				delete(c.m, k)
				break
			}
		}
		c.m[key] = events
		c.mu.Unlock()
	}
	return judge(pcrs, events, policies), nil
}

// akCache maps an AK's TPMT_PUBLIC bytes to the key parsed from them. The
// key is the bytes themselves, so a hit is exactly what ParseAKPublic would
// return; only the parse is saved, never a verification. A nil *akCache
// parses every time.
type akCache struct {
	mu sync.Mutex
	m  map[string]*attest.AKPublic
}

func (c *akCache) parse(public []byte) (*attest.AKPublic, error) {
	if c == nil {
		return attest.ParseAKPublic(public)
	}
	c.mu.Lock()
	ak, ok := c.m[string(public)]
	c.mu.Unlock()
	if ok {
		return ak, nil
	}
	ak, err := attest.ParseAKPublic(public)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*attest.AKPublic{}
	}
	if len(c.m) >= MaxCacheEntries {
		for k := range c.m { // evict one, whichever
			delete(c.m, k)
			break
		}
	}
	c.m[string(public)] = ak
	c.mu.Unlock()
	return ak, nil
}
