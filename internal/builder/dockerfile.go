package builder

import (
	"bytes"
	"fmt"
	"strings"
)

// From is one FROM instruction of a Dockerfile. heyvm does not interpret
// Dockerfiles (BuildKit does); it only reads which bases they name, to
// serve heyvm images and loopback registries to the builder's engine.
type From struct {
	Line  int    // 1-based
	Ref   string // as written
	Stage string // the AS name, if any
	// IsStage: Ref names an earlier stage of this Dockerfile, not an image.
	IsStage bool
}

// Froms lists the FROM instructions, in order. Comment lines and parser
// directives are skipped; an instruction continued with a backslash is
// read from its first line only, which is where a FROM's image is.
func Froms(dockerfile []byte) []From {
	var out []From
	stages := map[string]bool{}
	continued := false
	for i, line := range strings.Split(string(dockerfile), "\n") {
		t := strings.TrimSpace(line)
		wasContinued := continued
		continued = strings.HasSuffix(t, `\`) && !strings.HasPrefix(t, "#")
		if wasContinued || t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		f := strings.Fields(strings.TrimSuffix(t, `\`))
		if len(f) < 2 || !strings.EqualFold(f[0], "FROM") {
			continue
		}
		args := f[1:]
		for len(args) > 0 && strings.HasPrefix(args[0], "--") {
			args = args[1:] // --platform=...
		}
		if len(args) == 0 {
			continue
		}
		fr := From{Line: i + 1, Ref: args[0]}
		if len(args) >= 3 && strings.EqualFold(args[1], "AS") {
			fr.Stage = strings.ToLower(args[2])
		}
		fr.IsStage = stages[strings.ToLower(fr.Ref)]
		if fr.Stage != "" {
			stages[fr.Stage] = true
		}
		out = append(out, fr)
	}
	return out
}

// RewriteFroms replaces the image of the FROM on each given line. Line
// numbers are kept, so BuildKit's errors still point at the user's file.
func RewriteFroms(dockerfile []byte, refs map[int]string) ([]byte, error) {
	lines := bytes.Split(dockerfile, []byte("\n"))
	for _, f := range Froms(dockerfile) {
		to, ok := refs[f.Line]
		if !ok {
			continue
		}
		l := string(lines[f.Line-1])
		fields := strings.Fields(l)
		// The ref is the first argument that is not a flag.
		idx := -1
		for j := 1; j < len(fields); j++ {
			if !strings.HasPrefix(fields[j], "--") {
				idx = j
				break
			}
		}
		if idx < 0 || fields[idx] != f.Ref {
			return nil, fmt.Errorf("line %d: cannot find the image %q to replace", f.Line, f.Ref)
		}
		fields[idx] = to
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		lines[f.Line-1] = []byte(indent + strings.Join(fields, " "))
	}
	return bytes.Join(lines, []byte("\n")), nil
}

// LoopbackRegistry reports whether ref names an image in a registry on
// the host's loopback (127.0.0.1:PORT/..., localhost:PORT/..., or
// [::1]:PORT/...) and returns the registry's host:port.
func LoopbackRegistry(ref string) (hostPort string, ok bool) {
	reg, _, found := strings.Cut(ref, "/")
	if !found {
		return "", false
	}
	host := reg
	if strings.HasPrefix(reg, "[") {
		if i := strings.Index(reg, "]"); i > 0 {
			host = reg[1:i]
		}
	} else if i := strings.LastIndex(reg, ":"); i >= 0 {
		host = reg[:i]
	}
	switch host {
	case "127.0.0.1", "localhost", "::1":
		return reg, true
	}
	return "", false
}

// GuestRegistry is a loopback registry's host:port as the builder VM
// reaches it: QEMU's user network maps the host's loopback to gateway.
func GuestRegistry(hostPort, gateway string) string {
	port := ""
	if i := strings.LastIndex(hostPort, ":"); i >= 0 && !strings.HasSuffix(hostPort, "]") {
		port = hostPort[i:]
	}
	return gateway + port
}

// RewriteRegistry swaps the registry part of ref.
func RewriteRegistry(ref, registry string) string {
	_, rest, _ := strings.Cut(ref, "/")
	return registry + "/" + rest
}
