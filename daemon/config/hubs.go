package config

import (
	"net"
	"net/url"
	"strings"
	"time"
)

// Hub drivers.
const (
	DriverLocal       = "local"
	DriverMosquitto   = "mosquitto"
	DriverAzureIoTHub = "azure-iothub"
	DriverWebhook     = "webhook"
)

// DefaultLatencyProbePort is probed when a hub names no latencyProbe: MQTT
// over TLS, what devices connect to.
const DefaultLatencyProbePort = "8883"

// Hub is a linked hub. Its driver's settings are in the block named after
// the driver (local has none).
type Hub struct {
	Name                  string `yaml:"name"`
	HostName              string `yaml:"hostName"`
	AllocationWeight      *int   `yaml:"allocationWeight,omitempty"`
	ApplyAllocationPolicy *bool  `yaml:"applyAllocationPolicy,omitempty"`
	Driver                string `yaml:"driver,omitempty"`
	// LatencyProbe is the host:port the lowest-latency policy measures
	// (default hostName:8883).
	LatencyProbe string        `yaml:"latencyProbe,omitempty"`
	Mosquitto    *MosquittoHub `yaml:"mosquitto,omitempty" json:",omitempty"`
	AzureIoTHub  *AzureIoTHub  `yaml:"azureIotHub,omitempty" json:",omitempty"`
	Webhook      *WebhookHub   `yaml:"webhook,omitempty" json:",omitempty"`
}

// HubCalls bound a driver's calls to its hub.
type HubCalls struct {
	// Timeout of one attempt (default 5s).
	Timeout Duration `yaml:"timeout,omitempty"`
	// Retries after a failed attempt (default 2); refusals are not retried.
	Retries *int `yaml:"retries,omitempty"`
}

// MosquittoHub: a Mosquitto broker with the dynamic-security plugin.
type MosquittoHub struct {
	// URL of the broker for edgeprov's admin connection: mqtts://host:port,
	// or mqtt://host:port on loopback only.
	URL string `yaml:"url"`
	// Username of a dynamic-security admin; PasswordFile holds its password
	// (first line).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"passwordFile"`
	// CAFile holds PEM certificates trusted for the broker, besides the
	// system's.
	CAFile   string `yaml:"caFile,omitempty"`
	HubCalls `yaml:",inline"`
}

// AzureIoTHub: an Azure IoT hub, through its registry REST API.
type AzureIoTHub struct {
	// ConnectionStringFile holds the hub's service connection string
	// (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…), of a policy with
	// registry write rights.
	ConnectionStringFile string `yaml:"connectionStringFile"`
	// Endpoint overrides https://<HostName> (a private endpoint).
	Endpoint string `yaml:"endpoint,omitempty"`
	CAFile   string `yaml:"caFile,omitempty"`
	HubCalls `yaml:",inline"`
}

// WebhookHub: the webhook driver's endpoint (see daemon/hub/webhook).
type WebhookHub struct {
	// URL is the https base URL.
	URL string `yaml:"url"`
	// SecretFile holds the shared signing secret (first line, at least 16
	// bytes).
	SecretFile string `yaml:"secretFile"`
	CAFile     string `yaml:"caFile,omitempty"`
	HubCalls   `yaml:",inline"`
}

func (h *Hub) defaults() {
	if h.AllocationWeight == nil {
		one := 1
		h.AllocationWeight = &one
	}
	if h.ApplyAllocationPolicy == nil {
		t := true
		h.ApplyAllocationPolicy = &t
	}
	if h.Driver == "" {
		h.Driver = DriverLocal
	}
	if h.LatencyProbe == "" && h.HostName != "" {
		h.LatencyProbe = net.JoinHostPort(h.HostName, DefaultLatencyProbePort)
	}
	for _, c := range []*HubCalls{h.mosquittoCalls(), h.iotHubCalls(), h.webhookCalls()} {
		if c != nil {
			c.defaults()
		}
	}
}

func (h *Hub) mosquittoCalls() *HubCalls {
	if h.Mosquitto == nil {
		return nil
	}
	return &h.Mosquitto.HubCalls
}

func (h *Hub) iotHubCalls() *HubCalls {
	if h.AzureIoTHub == nil {
		return nil
	}
	return &h.AzureIoTHub.HubCalls
}

func (h *Hub) webhookCalls() *HubCalls {
	if h.Webhook == nil {
		return nil
	}
	return &h.Webhook.HubCalls
}

func (c *HubCalls) defaults() {
	setDefault(&c.Timeout, 5*time.Second)
	if c.Retries == nil {
		two := 2
		c.Retries = &two
	}
}

func (h *Hub) validate(p string, bad func(path, format string, args ...any)) {
	if w := *h.AllocationWeight; w < 1 || w > 1000 {
		bad(p+".allocationWeight", "must be 1 to 1000 (to drain a hub, set applyAllocationPolicy: false)")
	}
	if h.LatencyProbe != "" {
		if host, port, err := net.SplitHostPort(h.LatencyProbe); err != nil || host == "" || port == "" {
			bad(p+".latencyProbe", "%q is not a host:port address", h.LatencyProbe)
		}
	}
	blocks := map[string]bool{DriverMosquitto: h.Mosquitto != nil, DriverAzureIoTHub: h.AzureIoTHub != nil, DriverWebhook: h.Webhook != nil}
	blockName := map[string]string{DriverMosquitto: "mosquitto", DriverAzureIoTHub: "azureIotHub", DriverWebhook: "webhook"}
	switch h.Driver {
	case DriverLocal, DriverMosquitto, DriverAzureIoTHub, DriverWebhook:
	default:
		bad(p+".driver", "unknown hub driver %q (available: local, mosquitto, azure-iothub, webhook)", h.Driver)
		return
	}
	for d, present := range blocks {
		switch {
		case d == h.Driver && !present:
			bad(p+"."+blockName[d], "required for driver %s", d)
		case d != h.Driver && present:
			bad(p+"."+blockName[d], "settings for driver %s, but the hub's driver is %s", d, h.Driver)
		}
	}
	switch {
	case h.Driver == DriverMosquitto && h.Mosquitto != nil:
		m, q := h.Mosquitto, p+".mosquitto"
		u, err := url.Parse(m.URL)
		switch {
		case m.URL == "":
			bad(q+".url", "required")
		case err != nil || u.Host == "" || u.Port() == "":
			bad(q+".url", "%q is not mqtts://host:port", m.URL)
		case u.Scheme == "mqtt" && !loopback(u.Hostname()):
			bad(q+".url", "plain mqtt:// only to a broker on loopback; use mqtts://")
		case u.Scheme != "mqtts" && u.Scheme != "mqtt":
			bad(q+".url", "scheme must be mqtts (or mqtt on loopback)")
		}
		if m.Username == "" {
			bad(q+".username", "required (a dynamic-security admin)")
		}
		if m.PasswordFile == "" {
			bad(q+".passwordFile", "required")
		}
		validateCalls(q, m.Timeout, m.Retries, 10, bad)
	case h.Driver == DriverAzureIoTHub && h.AzureIoTHub != nil:
		a, q := h.AzureIoTHub, p+".azureIotHub"
		if a.ConnectionStringFile == "" {
			bad(q+".connectionStringFile", "required")
		}
		if a.Endpoint != "" {
			if u, err := url.Parse(a.Endpoint); err != nil || u.Scheme != "https" || u.Host == "" {
				bad(q+".endpoint", "must be an https URL")
			}
		}
		validateCalls(q, a.Timeout, a.Retries, 10, bad)
	case h.Driver == DriverWebhook && h.Webhook != nil:
		w, q := h.Webhook, p+".webhook"
		if u, err := url.Parse(w.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad(q+".url", "must be an https URL")
		}
		if w.SecretFile == "" {
			bad(q+".secretFile", "required")
		}
		validateCalls(q, w.Timeout, w.Retries, 10, bad)
	}
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
