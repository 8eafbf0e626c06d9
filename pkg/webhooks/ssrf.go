package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrForbiddenAddress is wrapped when a target is (or resolves to) an
// address webhooks must not reach: loopback, private, link-local, CGNAT,
// unspecified, multicast or a cloud metadata address.
var ErrForbiddenAddress = errors.New("webhook target address is not allowed")

// ErrInvalidURL is wrapped when an endpoint URL is malformed or its
// scheme is not allowed.
var ErrInvalidURL = errors.New("invalid webhook URL")

// forbiddenPrefixes are refused besides what netip's predicates catch.
var forbiddenPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),         // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),     // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),      // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),     // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),       // reserved, broadcast
	netip.MustParsePrefix("fd00:ec2::254/128"), // AWS metadata over IPv6 (also in fc00::/7)
	netip.MustParsePrefix("64:ff9b:1::/48"),    // local-use NAT64
}

// nat64 is the well-known NAT64 prefix: its addresses embed an IPv4 one.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// CheckAddr returns an error wrapping ErrForbiddenAddress when a webhook
// must not connect to ip. IPv4-mapped and NAT64 IPv6 forms are judged by
// the IPv4 address they carry.
func CheckAddr(ip netip.Addr) error {
	ip = ip.WithZone("")
	if ip.Is4In6() {
		ip = ip.Unmap()
	}
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:16]))
	}
	switch {
	case !ip.IsValid(),
		ip.IsLoopback(),
		ip.IsPrivate(),          // 10/8, 172.16/12, 192.168/16, fc00::/7
		ip.IsLinkLocalUnicast(), // 169.254/16 (metadata 169.254.169.254), fe80::/10
		ip.IsLinkLocalMulticast(),
		ip.IsInterfaceLocalMulticast(),
		ip.IsMulticast(),
		ip.IsUnspecified():
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, ip)
	}
	for _, p := range forbiddenPrefixes {
		if p.Contains(ip) {
			return fmt.Errorf("%w: %s", ErrForbiddenAddress, ip)
		}
	}
	return nil
}

// Resolver looks up a host's addresses; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ValidateURL checks an endpoint URL at registration: absolute https (http
// only with allowPrivate), a host, no user info, and, unless allowPrivate,
// a host that neither is nor resolves to a forbidden address. resolver nil
// means net.DefaultResolver. The returned URL is the parsed form.
func ValidateURL(ctx context.Context, resolver Resolver, raw string, allowPrivate bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && allowPrivate:
	default:
		return nil, fmt.Errorf("%w: scheme must be https, not %q", ErrInvalidURL, u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: no host", ErrInvalidURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: credentials in the URL are not allowed", ErrInvalidURL)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: fragments are not allowed", ErrInvalidURL)
	}
	if allowPrivate {
		return u, nil
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		return nil, wrapHost(host, CheckAddr(ip))
	}
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	addrs, err := resolver.LookupNetIP(ctx, "ip", strings.TrimSuffix(host, "."))
	if err != nil {
		return nil, fmt.Errorf("%w: resolve %s: %w", ErrInvalidURL, host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: %s has no address", ErrInvalidURL, host)
	}
	for _, ip := range addrs {
		if err := CheckAddr(ip); err != nil {
			return nil, wrapHost(host, err)
		}
	}
	return u, nil
}

func wrapHost(host string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("host %s: %w", host, err)
}

// dialControl refuses a connection whose actual remote address is
// forbidden. It runs after resolution and before connect, for every
// address tried, so a name that resolves differently at delivery time
// (DNS rebinding) is caught too.
func dialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable dial address %q", ErrForbiddenAddress, address)
	}
	return CheckAddr(ap.Addr())
}

// NewHTTPClient returns the client deliveries use: no proxy (the
// environment's proxy settings are ignored), redirects are not followed (a
// 3xx is an unsuccessful attempt), and, unless allowPrivate, every
// connection to a forbidden address is refused by the dialer. timeout
// bounds a whole attempt.
func NewHTTPClient(allowPrivate bool, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = dialControl
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
