package webhooks

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// fakeResolver answers every name with the same addresses.
type fakeResolver []netip.Addr

func (f fakeResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return f, nil
}

var forbiddenAddrs = []string{
	"127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1",
	"169.254.169.254", "169.254.1.1", "100.64.0.1", "100.127.255.254",
	"0.0.0.0", "255.255.255.255", "224.0.0.1",
	"::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
	"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1",
}

func TestCheckAddr(t *testing.T) {
	for _, s := range forbiddenAddrs {
		if err := CheckAddr(netip.MustParseAddr(s)); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("CheckAddr(%s) = %v, want ErrForbiddenAddress", s, err)
		}
	}
	for _, s := range []string{"93.184.216.34", "8.8.8.8", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"} {
		if err := CheckAddr(netip.MustParseAddr(s)); err != nil {
			t.Errorf("CheckAddr(%s) = %v, want allowed", s, err)
		}
	}
}

func TestValidateURLRefusesPrivateTargets(t *testing.T) {
	ctx := context.Background()
	for _, s := range forbiddenAddrs {
		host := s
		if netip.MustParseAddr(s).Is6() {
			host = "[" + s + "]"
		}
		raw := "https://" + host + "/hook"
		if _, err := ValidateURL(ctx, nil, raw, false); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("ValidateURL(%s) = %v, want ErrForbiddenAddress", raw, err)
		}
		if _, err := ValidateURL(ctx, nil, raw, true); err != nil {
			t.Errorf("ValidateURL(%s, allowPrivate) = %v, want accepted", raw, err)
		}
	}
	// localhost resolves (from /etc/hosts) to loopback.
	if _, err := ValidateURL(ctx, nil, "https://localhost:8443/hook", false); !errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("ValidateURL(localhost) = %v, want ErrForbiddenAddress", err)
	}
	// A name whose resolution includes a private address is refused.
	mixed := fakeResolver{netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("10.1.2.3")}
	if _, err := ValidateURL(ctx, mixed, "https://hooks.example.com/x", false); !errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("ValidateURL(name resolving to 10.1.2.3) = %v, want ErrForbiddenAddress", err)
	}
	public := fakeResolver{netip.MustParseAddr("93.184.216.34")}
	if _, err := ValidateURL(ctx, public, "https://hooks.example.com/x", false); err != nil {
		t.Errorf("ValidateURL(public name) = %v", err)
	}
}

func TestValidateURLShape(t *testing.T) {
	ctx := context.Background()
	public := fakeResolver{netip.MustParseAddr("93.184.216.34")}
	for _, raw := range []string{
		"http://hooks.example.com/x", "ftp://hooks.example.com/x", "hooks.example.com/x", "https:///x",
		"https://user:pw@hooks.example.com/x", "https://hooks.example.com/x#frag", "://bad",
	} {
		if _, err := ValidateURL(ctx, public, raw, false); !errors.Is(err, ErrInvalidURL) {
			t.Errorf("ValidateURL(%q) = %v, want ErrInvalidURL", raw, err)
		}
	}
	if _, err := ValidateURL(ctx, public, "http://hooks.example.com/x", true); err != nil {
		t.Errorf("http with allowPrivate: %v", err)
	}
}

// The dialer checks the address it actually connects to: a URL that
// passed validation (here the resolver used at registration said "public")
// but leads to loopback at delivery time is refused before any byte is
// sent, as a DNS rebinding would be.
func TestDialTimeCheckCatchesRebinding(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	target := "https://localhost:" + u.Port() + "/hook"

	rebound := fakeResolver{netip.MustParseAddr("93.184.216.34")}
	if _, err := ValidateURL(context.Background(), rebound, target, false); err != nil {
		t.Fatalf("registration check with the rebinding resolver: %v", err)
	}

	client := NewHTTPClient(false, 5*time.Second)
	client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	d := NewDeliverer(DelivererConfig{Client: client}, nil)
	secret, _ := NewSecret()
	for _, raw := range []string{target, srv.URL, "https://[::1]:" + u.Port() + "/hook"} {
		res := d.Deliver(context.Background(), Endpoint{URL: raw, Secret: secret}, Message{ID: "msg_x", Body: []byte(`{}`)})
		if res.Outcome != OutcomeRetry || !errors.Is(res.Err, ErrForbiddenAddress) {
			t.Errorf("Deliver to %s: outcome %s err %v, want a retry refused with ErrForbiddenAddress", raw, res.Outcome, res.Err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback receiver got %d requests; the dialer must refuse before connecting", n)
	}

	// The same client shape with allowPrivate reaches it (the test
	// certificate names 127.0.0.1, not localhost).
	okClient := NewHTTPClient(true, 5*time.Second)
	okClient.Transport.(*http.Transport).TLSClientConfig = client.Transport.(*http.Transport).TLSClientConfig
	res := NewDeliverer(DelivererConfig{AllowPrivate: true, Client: okClient}, nil).
		Deliver(context.Background(), Endpoint{URL: srv.URL + "/hook", Secret: secret}, Message{ID: "msg_x", Body: []byte(`{}`)})
	if res.Outcome != OutcomeSuccess || hits.Load() != 1 {
		t.Fatalf("with allowPrivate: outcome %s err %v hits %d", res.Outcome, res.Err, hits.Load())
	}
}

// dialControl refuses every forbidden address (it runs before connect, so
// calling it here sends nothing anywhere).
func TestDialControlRefusesForbiddenAddresses(t *testing.T) {
	for _, s := range forbiddenAddrs {
		addr := netip.AddrPortFrom(netip.MustParseAddr(s), 443).String()
		if err := dialControl("tcp", addr, nil); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("dialControl(%s) = %v, want ErrForbiddenAddress", addr, err)
		}
	}
	if err := dialControl("tcp", "93.184.216.34:443", nil); err != nil {
		t.Errorf("dialControl(public) = %v", err)
	}
}

// The client ignores the environment's proxy and does not follow
// redirects.
func TestHTTPClientNoProxyNoRedirects(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	var redirected atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			redirected.Add(1)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	c := NewHTTPClient(true, 5*time.Second)
	if c.Transport.(*http.Transport).Proxy != nil {
		t.Fatal("the transport has a proxy function")
	}
	secret, _ := NewSecret()
	res := NewDeliverer(DelivererConfig{AllowPrivate: true, Client: c}, nil).
		Deliver(context.Background(), Endpoint{URL: srv.URL + "/hook", Secret: secret}, Message{ID: "msg_r", Body: []byte(`{}`)})
	if res.Outcome != OutcomeRetry || res.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("redirect: outcome %s status %d err %v, want a retry on 307", res.Outcome, res.StatusCode, res.Err)
	}
	if redirected.Load() != 0 {
		t.Fatal("the redirect was followed")
	}
}
