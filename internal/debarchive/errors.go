package debarchive

import (
	"fmt"
	"net/http"
)

// VerifyError means the mirror served a file that fails verification: a bad
// signature, a hash or size that differs from the signed Release or the
// Packages index, or a Release that is stale or for another suite. Such a
// file is never used; retrying the same mirror is unlikely to help.
type VerifyError struct {
	Mirror  string // the mirror's base URL
	File    string // the file's path under the mirror, e.g. dists/bookworm/InRelease
	Problem string // what is wrong, phrased to follow the file name: "whose sha256 does not match the signed Release"
	Hint    string // the likely cause, e.g. "a broken or tampered mirror"
	Err     error  // the underlying error, if any
}

func (e *VerifyError) Error() string {
	msg := fmt.Sprintf("the mirror %s served %s %s (%s): refusing it", e.Mirror, e.File, e.Problem, e.Hint)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *VerifyError) Unwrap() error { return e.Err }

// UnreachableError means the mirror could not be reached, or the connection
// broke off: a network problem, not a verification one.
type UnreachableError struct {
	Mirror string // the mirror's base URL
	File   string // the file being fetched
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("the Debian mirror %s is unreachable (fetching %s): %v", e.Mirror, e.File, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// HTTPError means the mirror answered, but not with the file.
type HTTPError struct {
	Mirror     string
	File       string
	StatusCode int
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("the Debian mirror %s answered %d %s for %s", e.Mirror, e.StatusCode, http.StatusText(e.StatusCode), e.File)
}

// Hints for VerifyError.
const (
	hintTampered = "a broken or tampered mirror"
	hintStale    = "a stale mirror, a replayed Release, or a wrong clock"
)
