package portfwd

import (
	"sort"
	"strconv"
	"strings"
)

// WatchScript prints the guest's TCP sockets about once a second, each
// round ended by a line "---", for ParseListening. It runs in one SSH
// session for the sandbox's life, so watching costs no connection per
// poll.
const WatchScript = `while :; do cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; echo ---; sleep 1; done`

// ParseListening returns the TCP ports that listen on all addresses or on
// loopback in one round of /proc/net/tcp{,6}, sorted and without
// duplicates. Forwards reach the guest at 127.0.0.1 (sshd's direct-tcpip),
// so a socket bound only to another guest address is left out.
func ParseListening(round string) []int {
	seen := map[int]bool{}
	for _, line := range strings.Split(round, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "0A" { // 0A: LISTEN
			continue
		}
		addr, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil || port == 0 {
			continue
		}
		if !anyOrLoopback(addr) {
			continue
		}
		seen[int(port)] = true
	}
	out := make([]int, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// anyOrLoopback reads /proc/net's hex address: 0.0.0.0, 127.x.x.x, :: or
// ::1 (IPv4 in host byte order, little-endian here).
func anyOrLoopback(hexAddr string) bool {
	switch len(hexAddr) {
	case 8:
		return hexAddr == "00000000" || strings.HasSuffix(hexAddr, "7F")
	case 32:
		return hexAddr == strings.Repeat("0", 32) || hexAddr == "00000000000000000000000001000000" ||
			strings.HasPrefix(hexAddr, "0000000000000000FFFF0000") && (strings.HasSuffix(hexAddr, "00000000") || strings.HasSuffix(hexAddr, "7F"))
	}
	return false
}
