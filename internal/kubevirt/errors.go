package kubevirt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"
)

// Kinds of failure a cluster user meets. Every error this package returns
// for one of them wraps the kind (errors.Is works) and reads as one line
// that says what to do.
var (
	ErrNoKubeconfig  = errors.New("no kubeconfig")
	ErrUnauthorized  = errors.New("unauthorized")
	ErrNoKubeVirt    = errors.New("KubeVirt not installed")
	ErrNoCDI         = errors.New("CDI not installed")
	ErrForbidden     = errors.New("forbidden")
	ErrNotFound      = errors.New("no such sandbox")
	ErrExists        = errors.New("sandbox exists")
	ErrNotRunning    = errors.New("sandbox not running")
	ErrUnschedulable = errors.New("unschedulable")
	ErrImagePull     = errors.New("image pull failed")
	ErrDisk          = errors.New("root disk import failed")
)

// Error is a failure of one of the kinds above, with its one-line message.
type Error struct {
	Kind error
	Msg  string
	Err  error // the underlying error, if any
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func newError(kind, err error, format string, args ...any) *Error {
	return &Error{Kind: kind, Err: err, Msg: fmt.Sprintf(format, args...)}
}

// explainConfig maps kubeconfig loading errors.
func explainConfig(err error, path string) error {
	if err == nil {
		return nil
	}
	if clientcmd.IsEmptyConfig(err) {
		where := "$KUBECONFIG or ~/.kube/config"
		if path != "" {
			where = path
		}
		return newError(ErrNoKubeconfig, err, "no Kubernetes configuration found in %s: pass --kubeconfig FILE (and --kube-context NAME), or set KUBECONFIG", where)
	}
	return newError(ErrNoKubeconfig, err, "cannot load the kubeconfig: %v: fix the file or pass another with --kubeconfig", oneLine(err))
}

// what is a short description of the request, for messages
// ("create VirtualMachine demo"), ns the namespace.
func (c *Cluster) explain(err error, what string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	server := ""
	if c.rest != nil {
		server = c.rest.Host
	}
	msg := oneLine(err)
	switch {
	case apierrors.IsUnauthorized(err):
		return newError(ErrUnauthorized, err, "the cluster at %s rejected your credentials (%s): your login has expired or is wrong: log in again with your cluster's login command (the one that wrote your kubeconfig), then retry", server, msg)
	case apierrors.IsForbidden(err):
		return newError(ErrForbidden, err, "%s: forbidden in namespace %s (%s): ask a cluster admin for the kubevirt.io:edit role there, e.g. `kubectl create rolebinding heyvm --clusterrole=kubevirt.io:edit --user=YOU -n %s`", what, c.Namespace, msg, c.Namespace)
	case isExecPluginError(err):
		return newError(ErrUnauthorized, err, "the kubeconfig's credential plugin failed (%s): check that it is installed and that you are logged in, then retry", msg)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return fmt.Errorf("cannot reach the cluster at %s (%v): check the kubeconfig context (--kube-context) and your network or VPN", server, opErr.Err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isExecPluginError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "getting credentials: exec") || strings.Contains(s, "exec plugin")
}

// missingKind is the error for a resource the API server does not serve.
func missingKind(gvrResource string) error {
	switch gvrResource {
	case "datavolumes":
		return newError(ErrNoCDI, nil, "CDI (the Containerized Data Importer) is not installed in this cluster (no datavolumes.cdi.kubevirt.io CRD): install CDI %s or later, or create the sandbox with --ephemeral (its disk is then lost on stop)", TargetCDI)
	default:
		return newError(ErrNoKubeVirt, nil, "KubeVirt is not installed in this cluster (no %s.kubevirt.io CRD): install KubeVirt %s or later (with useEmulation on nodes without /dev/kvm), or pick another context", gvrResource, TargetKubeVirt)
	}
}

// isMissingResource says whether err means the API server has no such
// resource type at all (a CRD not installed), as opposed to no object.
func isMissingResource(err error) bool {
	if !apierrors.IsNotFound(err) {
		return false
	}
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		d := se.Status().Details
		// An object that is missing has its name in the details; a
		// resource that is missing has none.
		return d == nil || d.Name == ""
	}
	return false
}

// streamError maps a failed websocket upgrade of a VMI subresource.
func (c *Cluster) streamError(name, sub string, code int, body string, err error) error {
	body = strings.TrimSpace(body)
	detail := body
	if detail == "" && err != nil {
		detail = oneLine(err)
	}
	switch code {
	case http.StatusUnauthorized:
		return newError(ErrUnauthorized, err, "the cluster at %s rejected your credentials opening %s of %s (%s): log in again with your cluster's login command, then retry", c.rest.Host, sub, name, detail)
	case http.StatusForbidden:
		return newError(ErrForbidden, err, "you may not open virtualmachineinstances/%s in namespace %s (RBAC: %s): ask a cluster admin to grant it, e.g. `kubectl create rolebinding heyvm --clusterrole=kubevirt.io:edit --user=YOU -n %s` (kubevirt.io:edit includes console and portforward)", sub, c.Namespace, detail, c.Namespace)
	case http.StatusNotFound:
		if strings.Contains(body, "the server could not find the requested resource") || strings.Contains(body, "404 page not found") {
			return missingKind("virtualmachineinstances")
		}
		return newError(ErrNotRunning, err, "sandbox %s is not running (no VirtualMachineInstance): start it with `heyvm start %s`", name, name)
	case http.StatusBadRequest:
		return newError(ErrNotRunning, err, "sandbox %s is not ready for %s yet (%s)", name, sub, detail)
	}
	if code != 0 {
		return fmt.Errorf("open %s of sandbox %s: HTTP %d: %s", sub, name, code, detail)
	}
	return c.explain(err, "open "+sub+" of sandbox "+name)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
