package mosquitto_test

import (
	"crypto/tls"
	"testing"

	"github.com/edgeprov/edgeprov/testenv/mosquitto"
)

func TestBroker(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.WithTLS())
	t.Run("ok/admin-on-both-listeners", func(t *testing.T) {
		for _, tc := range []struct {
			addr string
			tls  *tls.Config
		}{{b.Addr, nil}, {b.TLSAddr, &tls.Config{RootCAs: b.RootCAs(t), MinVersion: tls.VersionTLS12}}} {
			c, err := mosquitto.Connect(tc.addr, "admin-check", mosquitto.AdminUser, b.AdminPassword, tc.tls)
			if err != nil {
				t.Fatalf("%s: %v\n%s", tc.addr, err, b.Log())
			}
			c.Close()
		}
	})
	t.Run("fail/anonymous-and-wrong-password", func(t *testing.T) {
		for _, pw := range []string{"", "wrong"} {
			user := mosquitto.AdminUser
			if pw == "" {
				user = ""
			}
			if c, err := mosquitto.Connect(b.Addr, "intruder", user, pw, nil); err == nil {
				c.Close()
				t.Fatalf("logged in as %q with %q", user, pw)
			}
		}
	})
	t.Run("fail/tls-without-the-ca", func(t *testing.T) {
		if c, err := mosquitto.Connect(b.TLSAddr, "x", mosquitto.AdminUser, b.AdminPassword, &tls.Config{MinVersion: tls.VersionTLS12}); err == nil {
			c.Close()
			t.Fatal("TLS accepted without trusting the broker's CA")
		}
	})
	t.Run("ok/stop", func(t *testing.T) {
		b.Stop()
		if c, err := mosquitto.Connect(b.Addr, "late", mosquitto.AdminUser, b.AdminPassword, nil); err == nil {
			c.Close()
			t.Fatal("connected after Stop")
		}
		b.Stop() // twice is fine
	})
}
