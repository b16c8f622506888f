// Package mosquitto is the hub driver for an Eclipse Mosquitto broker: it
// manages each device's MQTT user and access through Mosquitto's
// dynamic-security plugin (JSON commands on $CONTROL/dynamic-security/v1),
// so that a device can connect to the broker right after provisioning.
//
// What a provisioned device gets on the broker:
//
//   - a user (dynamic-security client) whose MQTT client ID is locked to the
//     device ID. Symmetric-key and TPM devices log in with username = device ID
//     and password = sas.MQTTPassword(deviceKey, deviceID), i.e.
//     base64(HMAC-SHA256(deviceKey, "edgeprov-mqtt-password:" + deviceID)),
//     which device and edgeprov both derive; the key itself never reaches the
//     broker. X.509 devices have no password: their user is the certificate's
//     CN, for a listener with require_certificate and use_identity_as_username.
//   - a role edgeprov-device-{deviceId}: publish, subscribe and receive on
//     devices/{deviceId}/#, except publishing to devices/{deviceId}/twin.
//   - devices/{deviceId}/twin: the device's initial twin, retained, as
//     {"tags":{…},"properties":{"desired":{…}}}, written by edgeprov only.
//
// Disabling the device disables the user and takes its role away (the broker
// disconnects it); deleting it deletes the user and role and clears the
// retained twin.
//
// Users edgeprov did not create are never modified: a device whose ID names an
// existing user without edgeprov's mark is refused. edgeprov's own broker
// user needs the dynamic-security admin role; on first connection the driver
// gives it one more role, edgeprov-service, to publish the retained twins.
package mosquitto

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/hub"
)

var (
	_ hub.Driver = (*Driver)(nil)
	_ hub.Reader = (*Driver)(nil)
)

// Dynamic-security topics.
const (
	ControlTopic  = "$CONTROL/dynamic-security/v1"
	ResponseTopic = ControlTopic + "/response"
)

// Names edgeprov gives what it manages on the broker.
const (
	// ManagedMark is the textname of every user edgeprov creates.
	ManagedMark = "edgeprov device"
	// ServiceRole lets edgeprov's own user publish the retained twins.
	ServiceRole = "edgeprov-service"
)

// RoleName is the role of a device.
func RoleName(deviceID string) string { return "edgeprov-device-" + deviceID }

// TopicPrefix is the device's namespace, devices/{deviceId}/.
func TopicPrefix(deviceID string) string { return "devices/" + deviceID + "/" }

// TwinTopic is where the device's twin is retained.
func TwinTopic(deviceID string) string { return TopicPrefix(deviceID) + "twin" }

// Config configures the driver of one broker.
type Config struct {
	// URL of the broker: mqtts://host:port (or ssl://), or mqtt://host:port
	// (tcp://) for a broker on loopback.
	URL string
	// Username and Password of edgeprov's dynamic-security admin user.
	Username, Password string
	// ClientID edgeprov connects with (default: edgeprov-<random>).
	ClientID string
	// TLS for mqtts (RootCAs from the config's caFile).
	TLS   *tls.Config
	Calls hub.Calls
	// Hub names the hub in errors and logs.
	Hub    string
	Logger *slog.Logger
}

// Driver manages the users of one broker over one admin connection.
type Driver struct {
	cfg    Config
	broker string // paho broker URL
	log    *slog.Logger

	connMu chan struct{} // held while (re)connecting; ctx-aware
	client atomic.Pointer[mqtt.Client]

	seq     atomic.Uint64
	mu      sync.Mutex
	pending map[string]chan []response // dynamic-security requests by correlation prefix
	twins   map[string][]chan []byte   // retained twin reads by topic
	closed  bool
}

// New checks the configuration; the broker is connected on first use (and
// again after the connection drops), so a broker that is down at start does
// not keep the daemon from serving its other hubs.
func New(cfg Config) (*Driver, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("mosquitto: url %q: want mqtts://host:port", cfg.URL)
	}
	scheme := ""
	switch u.Scheme {
	case "mqtts", "ssl", "tls":
		scheme = "ssl"
	case "mqtt", "tcp":
		scheme = "tcp"
	default:
		return nil, fmt.Errorf("mosquitto: url %q: scheme must be mqtts or mqtt", cfg.URL)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("mosquitto: url %q: port required", cfg.URL)
	}
	if cfg.Username == "" || cfg.Password == "" {
		return nil, errors.New("mosquitto: username and password of the dynamic-security admin are required")
	}
	if cfg.ClientID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		cfg.ClientID = "edgeprov-" + hex.EncodeToString(b[:])
	}
	if cfg.Hub == "" {
		cfg.Hub = u.Host
	}
	d := &Driver{cfg: cfg, broker: scheme + "://" + u.Host, log: cfg.Logger, connMu: make(chan struct{}, 1),
		pending: map[string]chan []response{}, twins: map[string][]chan []byte{}}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	return d, nil
}

// Close disconnects from the broker.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	if c := d.client.Load(); c != nil {
		(*c).Disconnect(250)
	}
	return nil
}

// command is one dynamic-security command.
type command map[string]any

// response is one command's answer.
type response struct {
	Command         string          `json:"command"`
	Error           string          `json:"error"`
	Data            json.RawMessage `json:"data"`
	CorrelationData string          `json:"correlationData"`
}

// Errors the plugin answers that a retried, idempotent step expects.
const (
	errClientExists   = "Client already exists"
	errRoleExists     = "Role already exists"
	errClientNotFound = "Client not found"
	errRoleNotFound   = "Role not found"
)

type clientInfo struct {
	Username        string `json:"username"`
	ClientID        string `json:"clientid"`
	TextName        string `json:"textname"`
	TextDescription string `json:"textdescription"`
	Disabled        bool   `json:"disabled"`
	Roles           []struct {
		RoleName string `json:"rolename"`
	} `json:"roles"`
}

type roleInfo struct {
	RoleName        string `json:"rolename"`
	TextName        string `json:"textname"`
	TextDescription string `json:"textdescription"`
}

// deviceMeta is kept in the device user's textdescription: what the broker has
// no field for but a migration carries to another hub.
type deviceMeta struct {
	IoTEdge bool `json:"iotEdge"`
}

// EnsureDevice creates or updates the device's user and role, enables or
// disables it, and publishes its twin when the registration sets one.
func (d *Driver) EnsureDevice(ctx context.Context, dev hub.Device) error {
	if err := checkDeviceID(dev.DeviceID); err != nil {
		return fmt.Errorf("mosquitto %s: %w", d.cfg.Hub, err)
	}
	username, password, err := credentials(dev)
	if err != nil {
		return fmt.Errorf("mosquitto %s: device %s: %w", d.cfg.Hub, dev.DeviceID, err)
	}
	meta, _ := json.Marshal(deviceMeta{IoTEdge: dev.IoTEdge})
	role := RoleName(dev.DeviceID)
	err = d.cfg.Calls.Do(ctx, func(ctx context.Context) error {
		res, err := d.exec(ctx, command{"command": "getClient", "username": username})
		if err != nil {
			return err
		}
		exists := res[0].Error == ""
		if exists {
			var got struct{ Client clientInfo }
			if err := json.Unmarshal(res[0].Data, &got); err != nil {
				return fmt.Errorf("getClient answer: %w", err)
			}
			if got.Client.TextName != ManagedMark {
				return fmt.Errorf("%w: broker user %q exists and was not created by edgeprov", hub.ErrRefused, username)
			}
		} else if res[0].Error != errClientNotFound {
			return fmt.Errorf("getClient: %s", res[0].Error)
		}
		// A disabled user cannot log in with a password, but a certificate
		// login (use_identity_as_username) skips that check: without its
		// role, such a device may do nothing either.
		roles := []command{{"rolename": role, "priority": 0}}
		if dev.Disabled {
			roles = []command{}
		}
		user := command{"username": username, "clientid": dev.DeviceID, "textname": ManagedMark,
			"textdescription": string(meta), "roles": roles}
		if password != "" {
			user["password"] = password
		}
		user["command"] = "createClient"
		if exists {
			user["command"] = "modifyClient"
		}
		enable := "enableClient"
		if dev.Disabled {
			enable = "disableClient"
		}
		cmds := []command{
			{"command": "createRole", "rolename": role, "textname": username},
			{"command": "modifyRole", "rolename": role, "textname": username, "acls": deviceACLs(dev.DeviceID)},
			user,
			{"command": enable, "username": username},
		}
		res, err = d.exec(ctx, cmds...)
		if err != nil {
			return err
		}
		return check(res, errRoleExists)
	})
	if err != nil {
		return fmt.Errorf("mosquitto %s: ensure device %s: %w", d.cfg.Hub, dev.DeviceID, err)
	}
	if dev.Twin != nil {
		data, err := json.Marshal(dev.Twin)
		if err != nil {
			return fmt.Errorf("mosquitto %s: twin of %s: %w", d.cfg.Hub, dev.DeviceID, err)
		}
		if err := d.cfg.Calls.Do(ctx, func(ctx context.Context) error { return d.publish(ctx, TwinTopic(dev.DeviceID), data) }); err != nil {
			return fmt.Errorf("mosquitto %s: publish twin of %s: %w", d.cfg.Hub, dev.DeviceID, err)
		}
	}
	return nil
}

// credentials are the device's broker username and password (empty for X.509).
func credentials(dev hub.Device) (string, string, error) {
	switch dev.AuthType {
	case hub.AuthSAS:
		if len(dev.Key) == 0 {
			return "", "", fmt.Errorf("%w: no device key to derive an MQTT password from", hub.ErrRefused)
		}
		return dev.DeviceID, sas.MQTTPassword(dev.Key, dev.DeviceID), nil
	case hub.AuthSelfSigned, hub.AuthCertificateAuthority:
		if dev.CommonName == "" {
			return "", "", fmt.Errorf("%w: an X.509 device needs its certificate's common name", hub.ErrRefused)
		}
		return dev.CommonName, "", nil
	}
	return "", "", fmt.Errorf("%w: unknown auth type %q", hub.ErrRefused, dev.AuthType)
}

// deviceACLs confine a device to devices/{id}/#; its twin it may read, not
// write. The deny has the higher priority, so it is checked first.
func deviceACLs(deviceID string) []command {
	ns := TopicPrefix(deviceID) + "#"
	return []command{
		{"acltype": "publishClientSend", "topic": TwinTopic(deviceID), "priority": 10, "allow": false},
		{"acltype": "publishClientSend", "topic": ns, "priority": 0, "allow": true},
		{"acltype": "publishClientReceive", "topic": ns, "priority": 0, "allow": true},
		{"acltype": "subscribePattern", "topic": ns, "priority": 0, "allow": true},
		{"acltype": "unsubscribePattern", "topic": ns, "priority": 0, "allow": true},
	}
}

// checkDeviceID refuses IDs that cannot be one MQTT topic level (IoT Hub
// allows + and #, which are wildcards here).
func checkDeviceID(id string) error {
	if id == "" || strings.ContainsAny(id, "+#/\x00") || strings.HasPrefix(id, "$") {
		return fmt.Errorf("%w: device ID %q cannot be an MQTT topic level (no +, #, / or leading $)", hub.ErrRefused, id)
	}
	return nil
}

// check fails on the first command error not in ok.
func check(res []response, ok ...string) error {
	for _, r := range res {
		if r.Error != "" && !slices.Contains(ok, r.Error) {
			return fmt.Errorf("%s: %s", r.Command, r.Error)
		}
	}
	return nil
}

// DeleteDevice deletes the device's user and role and clears its twin; a
// device the broker does not know is not an error.
func (d *Driver) DeleteDevice(ctx context.Context, deviceID string) error {
	if err := checkDeviceID(deviceID); err != nil {
		return nil // such a device was never created here
	}
	err := d.cfg.Calls.Do(ctx, func(ctx context.Context) error {
		username, managed, err := d.userOf(ctx, deviceID)
		if err != nil {
			return err
		}
		var cmds []command
		if managed {
			cmds = append(cmds, command{"command": "deleteClient", "username": username})
		}
		cmds = append(cmds, command{"command": "deleteRole", "rolename": RoleName(deviceID)})
		res, err := d.exec(ctx, cmds...)
		if err != nil {
			return err
		}
		if err := check(res, errClientNotFound, errRoleNotFound); err != nil {
			return err
		}
		// An empty retained message removes the retained twin.
		return d.publish(ctx, TwinTopic(deviceID), nil)
	})
	if err != nil {
		return fmt.Errorf("mosquitto %s: delete device %s: %w", d.cfg.Hub, deviceID, err)
	}
	return nil
}

// userOf finds the device's username through its role (X.509 users are named
// by CN, not device ID) and whether it is a user edgeprov manages.
func (d *Driver) userOf(ctx context.Context, deviceID string) (username string, managed bool, err error) {
	res, err := d.exec(ctx, command{"command": "getRole", "rolename": RoleName(deviceID)})
	if err != nil {
		return "", false, err
	}
	username = deviceID
	switch res[0].Error {
	case "":
		var got struct{ Role roleInfo }
		if err := json.Unmarshal(res[0].Data, &got); err != nil {
			return "", false, fmt.Errorf("getRole answer: %w", err)
		}
		if got.Role.TextName != "" {
			username = got.Role.TextName
		}
	case errRoleNotFound:
	default:
		return "", false, fmt.Errorf("getRole: %s", res[0].Error)
	}
	res, err = d.exec(ctx, command{"command": "getClient", "username": username})
	if err != nil {
		return "", false, err
	}
	switch res[0].Error {
	case "":
		var got struct{ Client clientInfo }
		if err := json.Unmarshal(res[0].Data, &got); err != nil {
			return "", false, fmt.Errorf("getClient answer: %w", err)
		}
		return username, got.Client.TextName == ManagedMark, nil
	case errClientNotFound:
		return username, false, nil
	}
	return "", false, fmt.Errorf("getClient: %s", res[0].Error)
}

// ReadDevice implements hub.Reader: the retained twin and the capabilities
// recorded with the user.
func (d *Driver) ReadDevice(ctx context.Context, deviceID string) (*hub.DeviceData, error) {
	if err := checkDeviceID(deviceID); err != nil {
		return nil, fmt.Errorf("mosquitto %s: %w", d.cfg.Hub, hub.ErrNotFound)
	}
	var out *hub.DeviceData
	err := d.cfg.Calls.Do(ctx, func(ctx context.Context) error {
		username, managed, err := d.userOf(ctx, deviceID)
		if err != nil {
			return err
		}
		if !managed {
			return fmt.Errorf("device %s: %w", deviceID, hub.ErrNotFound)
		}
		res, err := d.exec(ctx, command{"command": "getClient", "username": username})
		if err != nil {
			return err
		}
		var got struct{ Client clientInfo }
		if err := json.Unmarshal(res[0].Data, &got); err != nil {
			return fmt.Errorf("getClient answer: %w", err)
		}
		var meta deviceMeta
		_ = json.Unmarshal([]byte(got.Client.TextDescription), &meta)
		twin, err := d.readRetained(ctx, TwinTopic(deviceID))
		if err != nil {
			return err
		}
		out = &hub.DeviceData{IoTEdge: &meta.IoTEdge}
		if len(twin) > 0 {
			if err := json.Unmarshal(twin, &out.Twin); err != nil {
				return hub.Permanent(fmt.Errorf("retained twin of %s is not a twin: %w", deviceID, err))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mosquitto %s: read device %s: %w", d.cfg.Hub, deviceID, err)
	}
	return out, nil
}

// readRetained returns the message retained on topic (nil when none). The
// broker sends retained messages right after it processes the subscription;
// a dynamic-security request sent after it is answered after them, on the
// same connection, in order, so once that answer is in, the retained message
// has been seen if there is one.
func (d *Driver) readRetained(ctx context.Context, topic string) ([]byte, error) {
	c, err := d.connect(ctx)
	if err != nil {
		return nil, err
	}
	ch := make(chan []byte, 1)
	d.mu.Lock()
	d.twins[topic] = append(d.twins[topic], ch)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		l := slices.DeleteFunc(d.twins[topic], func(x chan []byte) bool { return x == ch })
		last := len(l) == 0
		if last {
			delete(d.twins, topic)
		} else {
			d.twins[topic] = l
		}
		d.mu.Unlock()
		if last {
			c.Unsubscribe(topic)
		}
	}()
	// Every reader subscribes: the broker sends the retained message again on
	// each subscription, after which this reader's marker request is answered.
	if err := wait(ctx, c.Subscribe(topic, 1, d.onTwin)); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", topic, err)
	}
	if _, err := d.exec(ctx, command{"command": "getDefaultACLAccess"}); err != nil {
		return nil, err
	}
	select {
	case b := <-ch:
		return b, nil
	default:
		return nil, nil
	}
}

func (d *Driver) onTwin(_ mqtt.Client, m mqtt.Message) {
	if !m.Retained() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ch := range d.twins[m.Topic()] {
		select {
		case ch <- m.Payload():
		default:
		}
	}
}

// exec sends commands in one request and returns their answers, in order.
func (d *Driver) exec(ctx context.Context, cmds ...command) ([]response, error) {
	c, err := d.connect(ctx)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("%s-%d", d.cfg.ClientID, d.seq.Add(1))
	for i, cmd := range cmds {
		cmd["correlationData"] = fmt.Sprintf("%s/%d", id, i)
	}
	body, err := json.Marshal(map[string]any{"commands": cmds})
	if err != nil {
		return nil, err
	}
	ch := make(chan []response, 1)
	d.mu.Lock()
	d.pending[id] = ch
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.pending, id)
		d.mu.Unlock()
	}()
	// QoS 0 both ways: a lost request or answer surfaces as a timeout and the
	// idempotent step is retried, and the broker answers with one packet
	// rather than a PUBACK followed by the answer, which Nagle's algorithm on
	// the broker's side (set_tcp_nodelay defaults to false) holds back until
	// our delayed ACK, some 40 ms.
	if err := wait(ctx, c.Publish(ControlTopic, 0, false, body)); err != nil {
		return nil, fmt.Errorf("publish %s: %w", ControlTopic, err)
	}
	select {
	case res := <-ch:
		if len(res) != len(cmds) {
			return nil, fmt.Errorf("dynamic-security answered %d responses to %d commands", len(res), len(cmds))
		}
		return res, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no dynamic-security answer: %w", ctx.Err())
	}
}

func (d *Driver) onResponse(_ mqtt.Client, m mqtt.Message) {
	var msg struct {
		Responses []response `json:"responses"`
	}
	if err := json.Unmarshal(m.Payload(), &msg); err != nil || len(msg.Responses) == 0 {
		return
	}
	id, _, _ := strings.Cut(msg.Responses[0].CorrelationData, "/")
	d.mu.Lock()
	ch := d.pending[id]
	d.mu.Unlock()
	if ch != nil {
		select {
		case ch <- msg.Responses:
		default:
		}
	}
}

func (d *Driver) publish(ctx context.Context, topic string, payload []byte) error {
	c, err := d.connect(ctx)
	if err != nil {
		return err
	}
	if payload == nil {
		payload = []byte{}
	}
	return wait(ctx, c.Publish(topic, 1, true, payload))
}

// connect returns the admin connection, (re)opening it when needed.
func (d *Driver) connect(ctx context.Context) (mqtt.Client, error) {
	if c := d.client.Load(); c != nil && (*c).IsConnectionOpen() {
		return *c, nil
	}
	select {
	case d.connMu <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("connect to %s: %w", d.broker, ctx.Err())
	}
	defer func() { <-d.connMu }()
	if c := d.client.Load(); c != nil {
		if (*c).IsConnectionOpen() {
			return *c, nil
		}
		(*c).Disconnect(0)
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, hub.Permanent(errors.New("driver closed"))
	}
	opts := mqtt.NewClientOptions().AddBroker(d.broker).SetClientID(d.cfg.ClientID).
		SetUsername(d.cfg.Username).SetPassword(d.cfg.Password).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).SetKeepAlive(30 * time.Second)
	if d.cfg.TLS != nil {
		opts.SetTLSConfig(d.cfg.TLS)
	}
	if dl, ok := ctx.Deadline(); ok {
		opts.SetConnectTimeout(time.Until(dl))
	}
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		d.log.Warn("connection to the broker lost", "hub", d.cfg.Hub, "error", err)
	})
	// Adding the service role to edgeprov's user (once per broker) makes the
	// broker disconnect that user's sessions, this one included: connect
	// again, and the role is there.
	for range 2 {
		c := mqtt.NewClient(opts)
		if err := wait(ctx, c.Connect()); err != nil {
			c.Disconnect(0)
			if strings.Contains(err.Error(), "not Authorized") || strings.Contains(err.Error(), "bad user name or password") {
				return nil, hub.Permanent(fmt.Errorf("connect to %s as %s: %w", d.broker, d.cfg.Username, err))
			}
			return nil, fmt.Errorf("connect to %s: %w", d.broker, err)
		}
		if err := wait(ctx, c.Subscribe(ResponseTopic, 0, d.onResponse)); err != nil {
			c.Disconnect(0)
			return nil, fmt.Errorf("subscribe %s: %w", ResponseTopic, err)
		}
		d.client.Store(&c)
		again, err := d.setup(ctx, c)
		if err != nil || again {
			d.client.Store(nil)
			c.Disconnect(0)
		}
		if err != nil {
			return nil, err
		}
		if !again {
			d.log.Info("connected to the broker", "hub", d.cfg.Hub, "broker", d.broker)
			return c, nil
		}
	}
	return nil, errors.New("dynamic-security setup: the service role did not stay on edgeprov's user")
}

// setup makes sure edgeprov's own user may publish the retained twins: the
// edgeprov-service role exists and is the user's. again is true when the role
// was just added, which closes this connection.
func (d *Driver) setup(ctx context.Context, c mqtt.Client) (again bool, err error) {
	res, err := d.exec(ctx,
		command{"command": "createRole", "rolename": ServiceRole, "textname": "edgeprov: publishes device twins"},
		command{"command": "modifyRole", "rolename": ServiceRole, "acls": []command{
			{"acltype": "publishClientSend", "topic": "devices/+/twin", "priority": 0, "allow": true}}},
		command{"command": "getClient", "username": d.cfg.Username})
	if err != nil {
		return false, fmt.Errorf("dynamic-security setup: %w", err)
	}
	if err := check(res, errRoleExists); err != nil {
		return false, hub.Permanent(fmt.Errorf("dynamic-security setup (is %s a dynamic-security admin?): %w", d.cfg.Username, err))
	}
	var self struct{ Client clientInfo }
	if err := json.Unmarshal(res[2].Data, &self); err != nil {
		return false, fmt.Errorf("getClient answer: %w", err)
	}
	for _, r := range self.Client.Roles {
		if r.RoleName == ServiceRole {
			return false, nil
		}
	}
	d.log.Info("giving edgeprov's broker user the role that publishes device twins; the broker disconnects its sessions once",
		"hub", d.cfg.Hub, "user", d.cfg.Username, "role", ServiceRole)
	// No answer comes: the broker drops this connection as it applies it.
	body, _ := json.Marshal(map[string]any{"commands": []command{{"command": "addClientRole", "username": d.cfg.Username, "rolename": ServiceRole, "priority": 0}}})
	_ = wait(ctx, c.Publish(ControlTopic, 1, false, body))
	for c.IsConnectionOpen() {
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("dynamic-security setup: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true, nil
}

// Check connects to the broker (and sets up edgeprov's role) now.
func (d *Driver) Check(ctx context.Context) error {
	return d.cfg.Calls.Do(ctx, func(ctx context.Context) error {
		_, err := d.connect(ctx)
		return err
	})
}

// wait waits for a paho token or ctx.
func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
