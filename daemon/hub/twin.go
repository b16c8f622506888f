package hub

import (
	"encoding/json"
	"strings"
)

// Twin is what provisioning sets on a device twin: tags and desired
// properties. It marshals in IoT Hub's shape,
// {"tags":{…},"properties":{"desired":{…}}}, with both objects always present
// so that writing it replaces what was there.
type Twin struct {
	Tags    map[string]any
	Desired map[string]any
}

type twinJSON struct {
	Tags       map[string]any `json:"tags"`
	Properties struct {
		Desired map[string]any `json:"desired"`
	} `json:"properties"`
}

// MarshalJSON implements json.Marshaler.
func (t Twin) MarshalJSON() ([]byte, error) {
	var j twinJSON
	j.Tags, j.Properties.Desired = t.Tags, t.Desired
	if j.Tags == nil {
		j.Tags = map[string]any{}
	}
	if j.Properties.Desired == nil {
		j.Properties.Desired = map[string]any{}
	}
	return json.Marshal(j)
}

// UnmarshalJSON implements json.Unmarshaler. IoT Hub's bookkeeping members of
// the desired properties ($metadata, $version) are dropped: they are the
// hub's, not the device's data.
func (t *Twin) UnmarshalJSON(b []byte) error {
	var j twinJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	t.Tags, t.Desired = j.Tags, j.Properties.Desired
	for k := range t.Desired {
		if strings.HasPrefix(k, "$") {
			delete(t.Desired, k)
		}
	}
	return nil
}

// Empty reports whether the twin sets nothing.
func (t Twin) Empty() bool { return len(t.Tags) == 0 && len(t.Desired) == 0 }
