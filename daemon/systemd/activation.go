package systemd

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
)

// Listeners are the stream sockets systemd passed (LISTEN_FDS), grouped by
// their names (LISTEN_FDNAMES, set by FileDescriptorName= in the .socket unit).
// One name may carry several sockets (a unit with several ListenStream= lines).
type Listeners struct {
	byName map[string][]net.Listener
	taken  map[string]bool
}

// InheritedListeners takes the sockets passed to this process and clears
// LISTEN_* from the environment. Without socket activation it returns an empty
// set. A passed descriptor that is not a listening stream socket is an error:
// serving it would leave its clients hanging.
func InheritedListeners() (*Listeners, error) {
	l := &Listeners{byName: map[string][]net.Listener{}, taken: map[string]bool{}}
	for _, f := range activation.Files(true) {
		fd := f.Fd()
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("socket activation: descriptor %d (%s) is not a listening stream socket: %w", fd, f.Name(), err)
		}
		l.byName[f.Name()] = append(l.byName[f.Name()], ln)
	}
	return l, nil
}

// Take returns the sockets named name (none if systemd passed none) and marks
// the name as served.
func (l *Listeners) Take(name string) []net.Listener {
	l.taken[name] = true
	return l.byName[name]
}

// CheckAllTaken fails when a passed socket has a name no listener of this
// daemon took: connections to it would queue and never be answered.
func (l *Listeners) CheckAllTaken(known []string) error {
	var extra []string
	for name := range l.byName {
		if !l.taken[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	slices.Sort(extra)
	return fmt.Errorf("socket activation: sockets named %s are not served by this edgeprovd (set FileDescriptorName= to one of %s)",
		strings.Join(extra, ", "), strings.Join(known, ", "))
}

// Close closes every socket not taken.
func (l *Listeners) Close() {
	for name, ls := range l.byName {
		if l.taken[name] {
			continue
		}
		for _, ln := range ls {
			ln.Close()
		}
	}
}

// Len is how many sockets were passed.
func (l *Listeners) Len() int {
	n := 0
	for _, ls := range l.byName {
		n += len(ls)
	}
	return n
}
