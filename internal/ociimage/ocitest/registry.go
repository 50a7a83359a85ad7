// Package ocitest runs go-containerregistry's in-process registry on
// 127.0.0.1 for tests, with hooks to count uploads and downloads and to
// break, corrupt, hold back or lock blobs and repositories.
package ocitest

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is a test registry. Its zero value is not usable: use Start.
type Registry struct {
	// Host is host:port, for refs like Host+"/heyvm/debian:12".
	Host string
	h    http.Handler

	mu      sync.Mutex
	uploads int
	gets    map[string]int  // blob hex → GETs
	fail    map[string]bool // blob hex → 404
	corrupt map[string]bool // blob hex → one byte flipped
	hold    map[string]chan struct{}
	private string // repositories under this prefix answer 401
}

// Start serves a fresh registry until the test ends.
func Start(t testing.TB) *Registry {
	r := &Registry{
		h:    registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		gets: map[string]int{}, fail: map[string]bool{}, corrupt: map[string]bool{}, hold: map[string]chan struct{}{},
	}
	srv := httptest.NewServer(r)
	t.Cleanup(func() {
		r.mu.Lock()
		for _, c := range r.hold {
			close(c)
		}
		r.hold = map[string]chan struct{}{}
		r.mu.Unlock()
		srv.Close()
	})
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// Uploads is how many blob uploads have started.
func (r *Registry) Uploads() int { r.mu.Lock(); defer r.mu.Unlock(); return r.uploads }

// Gets is how often the blob with this hex digest was downloaded.
func (r *Registry) Gets(hex string) int { r.mu.Lock(); defer r.mu.Unlock(); return r.gets[hex] }

// ResetGets forgets the download counts.
func (r *Registry) ResetGets() { r.mu.Lock(); r.gets = map[string]int{}; r.mu.Unlock() }

// Fail makes a blob answer 404 (on) or normally (off).
func (r *Registry) Fail(hex string, on bool) { r.mu.Lock(); r.fail[hex] = on; r.mu.Unlock() }

// Corrupt makes a blob's body come back with one byte flipped.
func (r *Registry) Corrupt(hex string, on bool) { r.mu.Lock(); r.corrupt[hex] = on; r.mu.Unlock() }

// Hold makes downloads of a blob wait until Release.
func (r *Registry) Hold(hex string) { r.mu.Lock(); r.hold[hex] = make(chan struct{}); r.mu.Unlock() }

// Release lets held downloads of a blob go on.
func (r *Registry) Release(hex string) {
	r.mu.Lock()
	if c, ok := r.hold[hex]; ok {
		close(c)
		delete(r.hold, hex)
	}
	r.mu.Unlock()
}

// Private makes repositories under prefix demand authentication.
func (r *Registry) Private(prefix string) { r.mu.Lock(); r.private = prefix; r.mu.Unlock() }

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	private := r.private
	if req.Method == http.MethodPost && strings.Contains(req.URL.Path, "/blobs/uploads") {
		r.uploads++
	}
	var hex string
	var fail, corrupt bool
	var hold chan struct{}
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
		hex = req.URL.Path[strings.LastIndex(req.URL.Path, ":")+1:]
		r.gets[hex]++
		fail, corrupt, hold = r.fail[hex], r.corrupt[hex], r.hold[hex]
	}
	r.mu.Unlock()
	if private != "" && strings.HasPrefix(req.URL.Path, "/v2/"+private) {
		w.Header().Set("WWW-Authenticate", `Basic realm="heyvm-test"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
		return
	}
	if hold != nil {
		select {
		case <-hold:
		case <-req.Context().Done():
			return
		}
	}
	switch {
	case fail:
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
	case corrupt:
		rec := httptest.NewRecorder()
		r.h.ServeHTTP(rec, req)
		b := rec.Body.Bytes()
		if len(b) > 0 {
			b[len(b)/2] ^= 0xff
		}
		w.WriteHeader(rec.Code)
		w.Write(b)
	default:
		r.h.ServeHTTP(w, req)
	}
}
