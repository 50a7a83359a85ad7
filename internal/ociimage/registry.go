package ociimage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Registry is how heyvm talks to registries: TLS always, except that
// --insecure allows plain HTTP to a registry on this machine; credentials
// from Docker's config and credential helpers.
type Registry struct {
	Insecure bool
	Keychain authn.Keychain // nil: authn.DefaultKeychain
	// Transport is the base round tripper (nil: remote.DefaultTransport).
	Transport http.RoundTripper
}

// ParseRef parses a registry reference and applies the --insecure rule.
func (r Registry) ParseRef(ref string) (name.Reference, error) {
	var opts []name.Option
	if r.Insecure {
		opts = append(opts, name.Insecure)
	}
	parsed, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("%q is not a registry reference (%v): use a form like ghcr.io/acme/heyvm-base:1", ref, err)
	}
	host := parsed.Context().RegistryStr()
	if r.Insecure && !IsLoopbackHost(host) {
		return nil, fmt.Errorf("--insecure (plain HTTP) is allowed only for a registry on this machine (localhost, 127.0.0.1, [::1]); %s is not one: drop --insecure and use its TLS address", host)
	}
	return parsed, nil
}

// IsLoopbackHost reports whether a registry host[:port] is this machine.
func IsLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// errPlainHTTP is what the guard transport answers to an http:// request
// that --insecure did not allow. go-containerregistry itself falls back to
// plain HTTP for private-range and loopback addresses; heyvm does not.
var errPlainHTTP = errors.New("plain HTTP refused")

type tlsOnly struct {
	base     http.RoundTripper
	insecure bool
}

func (t tlsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !(t.insecure && IsLoopbackHost(req.URL.Host)) {
		return nil, fmt.Errorf("%w: %s", errPlainHTTP, req.URL.Host)
	}
	return t.base.RoundTrip(req)
}

// RemoteOptions are the go-containerregistry options heyvm talks to a
// registry with (credentials, the TLS rule, concurrency, user agent), for
// packages that push other kinds of images (the KubeVirt containerDisk).
func (r Registry) RemoteOptions(ctx context.Context, extra ...remote.Option) []remote.Option {
	return r.options(ctx, extra...)
}

func (r Registry) options(ctx context.Context, extra ...remote.Option) []remote.Option {
	base := r.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	kc := r.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(tlsOnly{base: base, insecure: r.Insecure}),
		remote.WithJobs(max(2, runtime.NumCPU())),
		remote.WithUserAgent("heyvm"),
	}
	return append(opts, extra...)
}

// Fetch resolves ref to an index or a single manifest. Nothing is
// downloaded but manifests.
func (r Registry) Fetch(ctx context.Context, ref string) (Source, error) {
	parsed, err := r.ParseRef(ref)
	if err != nil {
		return Source{}, err
	}
	desc, err := remote.Get(parsed, r.options(ctx)...)
	if err != nil {
		return Source{}, UserError(ref, err)
	}
	src := Source{Desc: parsed.String(), BlobsVerified: true}
	if desc.MediaType.IsIndex() {
		src.Index, err = desc.ImageIndex()
	} else {
		src.Image, err = desc.Image()
	}
	return src, UserError(ref, err)
}

// Push uploads the artifact to ref. If ref already holds a heyvm index,
// its manifests for other architectures are kept, so pushing an amd64 and
// then an arm64 image to one ref makes one multi-arch ref. Blobs the
// registry has are skipped; layers go up concurrently.
func (r Registry) Push(ctx context.Context, a *Artifact, ref string, prog Progress) (v1.Hash, error) {
	parsed, err := r.ParseRef(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	var keep []mutate.IndexAddendum
	if desc, err := remote.Get(parsed, r.options(ctx)...); err == nil && desc.MediaType.IsIndex() {
		if idx, err := desc.ImageIndex(); err == nil {
			if im, err := idx.IndexManifest(); err == nil {
				for _, d := range im.Manifests {
					if d.Platform == nil || d.Platform.Architecture == a.Image.Meta.Arch || d.ArtifactType != ArtifactType {
						continue
					}
					child, err := idx.Image(d.Digest)
					if err != nil {
						continue
					}
					keep = append(keep, mutate.IndexAddendum{Add: child, Descriptor: d})
				}
			}
		}
	} else if err != nil && !isNotFound(err) {
		return v1.Hash{}, UserError(ref, err)
	}
	idx, err := a.Index(keep...)
	if err != nil {
		return v1.Hash{}, err
	}
	updates := make(chan v1.Update, 64)
	done := make(chan struct{})
	p := orNoProgress(prog)
	// go-containerregistry's totals grow as it discovers blobs; the bar
	// shows the artifact's size from the start instead.
	total := int64(len(a.config))
	for _, l := range a.layers {
		total += l.desc.Size
	}
	p.Phase("upload "+a.Image.Name, total)
	go func() {
		defer close(done)
		var last int64
		for u := range updates {
			if c := min(u.Complete, total); c > last {
				p.Add(c - last)
				last = c
			}
		}
	}()
	err = remote.WriteIndex(parsed, idx, r.options(ctx, remote.WithProgress(updates))...)
	<-done
	if err != nil {
		return v1.Hash{}, UserError(ref, err)
	}
	p.Done()
	return idx.Digest()
}

func isNotFound(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		if te.StatusCode == http.StatusNotFound {
			return true
		}
		for _, d := range te.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return true
			}
		}
	}
	return false
}

// UserError turns a registry error into one line that says what to do.
func UserError(ref string, err error) error {
	if err == nil {
		return nil
	}
	host := ref
	if p, perr := name.ParseReference(ref); perr == nil {
		host = p.Context().RegistryStr()
	}
	var te *transport.Error
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, errPlainHTTP) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		if IsLoopbackHost(host) {
			return fmt.Errorf("registry %s does not speak TLS: pass --insecure to use plain HTTP (allowed for registries on this machine only)", host)
		}
		return fmt.Errorf("registry %s does not speak TLS, and heyvm uses plain HTTP only for registries on this machine: serve it over TLS", host)
	case isNotFound(err):
		return fmt.Errorf("no image at %s: check the repository and tag (`heyvm images push NAME %s` puts one there)", ref, ref)
	case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden || hasCode(te, transport.UnauthorizedErrorCode, transport.DeniedErrorCode)):
		return fmt.Errorf("registry %s refused access to %s (authentication required or denied): log in with `docker login %s`; heyvm uses Docker's credentials and credential helpers", host, ref, host)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return fmt.Errorf("cannot reach registry %s: %v", host, opErr.Err)
	}
	return fmt.Errorf("%s: %w", ref, err)
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}
