// Package backup writes and restores edgeprovd's state as one tar archive: a
// manifest, a consistent snapshot of the embedded store, and the TLS material
// and policy keys that edgeprovd init made. Restoring only the store would leave
// devices facing a new CA and operators a new policy key, so all of it travels
// together. The archive holds private keys: it is written 0600.
package backup

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ManifestName is the archive's first entry.
const ManifestName = "edgeprov-backup.json"

// FormatVersion is the archive layout this build writes and reads.
const FormatVersion = 1

// Manifest describes an archive.
type Manifest struct {
	Format        int       `json:"format"`
	IDScope       string    `json:"idScope"`
	SchemaVersion int       `json:"schemaVersion"`
	CreatedAt     time.Time `json:"createdAt"`
	Edgeprovd     string    `json:"edgeprovd"`
	Files         []string  `json:"files"`
}

// Snapshotter gives a consistent copy of a store file (bolt.Store.Snapshot).
type Snapshotter interface {
	Snapshot(fn func(size int64, w io.WriterTo) error) error
}

// Layout is what a state directory holds, relative to it.
type Layout struct {
	StateDir string
	// Store is the store file's name, e.g. edgeprov.db.
	Store string
	// Dirs are the directories copied whole, e.g. tls and policies.
	Dirs []string
	// Files are single files copied when they exist, e.g. secrets.key.
	Files []string
}

// Write writes the archive of l to w: m (Files filled in here), the store
// through snap, then every regular file under l.Dirs.
func Write(w io.Writer, l Layout, snap Snapshotter, m Manifest) error {
	files, err := l.files()
	if err != nil {
		return err
	}
	m.Format = FormatVersion
	m.Files = append([]string{l.Store}, files...)
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := writeEntry(tw, ManifestName, int64(len(mj)), m.CreatedAt, func(w io.Writer) error {
		_, err := w.Write(mj)
		return err
	}); err != nil {
		return err
	}
	err = snap.Snapshot(func(size int64, wt io.WriterTo) error {
		return writeEntry(tw, l.Store, size, m.CreatedAt, func(w io.Writer) error {
			_, err := wt.WriteTo(w)
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("store snapshot: %w", err)
	}
	for _, name := range files {
		if err := copyFile(tw, filepath.Join(l.StateDir, filepath.FromSlash(name)), name); err != nil {
			return err
		}
	}
	return tw.Close()
}

func (l Layout) files() ([]string, error) {
	var out []string
	for _, f := range l.Files {
		if st, err := os.Stat(filepath.Join(l.StateDir, f)); err == nil && st.Mode().IsRegular() {
			out = append(out, f)
		}
	}
	for _, d := range l.Dirs {
		root := filepath.Join(l.StateDir, d)
		err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.Type().IsRegular() {
				rel, err := filepath.Rel(l.StateDir, p)
				if err != nil {
					return err
				}
				out = append(out, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read state directory: %w", err)
		}
	}
	slices.Sort(out)
	return out, nil
}

func writeEntry(tw *tar.Writer, name string, size int64, mtime time.Time, body func(io.Writer) error) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := body(tw); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func copyFile(tw *tar.Writer, src, name string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("read state directory: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return writeEntry(tw, name, st.Size(), st.ModTime(), func(w io.Writer) error {
		_, err := io.CopyN(w, f, st.Size())
		return err
	})
}

// VerifyFunc checks an extracted store file and returns its ID scope.
type VerifyFunc func(storePath string) (idScope string, err error)

// Extract reads an archive into dir (created 0700, must not exist) and checks
// it: the manifest first, only the names it lists, and the store verified by
// verify with the manifest's ID scope. On error dir is removed.
func Extract(r io.Reader, dir string, l Layout, verify VerifyFunc) (m *Manifest, err error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	tr := tar.NewReader(r)
	h, err := tr.Next()
	if err != nil || h.Name != ManifestName {
		return nil, fmt.Errorf("not an edgeprov backup: the first entry is not %s", ManifestName)
	}
	m = &Manifest{}
	if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(m); err != nil {
		return nil, fmt.Errorf("backup manifest: %w", err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("backup format %d is not supported by this edgeprovd (%d)", m.Format, FormatVersion)
	}
	want := map[string]bool{}
	for _, f := range m.Files {
		if !l.allowed(f) {
			return nil, fmt.Errorf("backup manifest lists %q, which is not part of a state directory", f)
		}
		want[f] = true
	}
	if !want[l.Store] {
		return nil, fmt.Errorf("backup manifest lists no store (%s)", l.Store)
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read backup: %w", err)
		}
		if h.Typeflag != tar.TypeReg || !want[h.Name] {
			return nil, fmt.Errorf("backup holds %q, which its manifest does not list", h.Name)
		}
		delete(want, h.Name)
		if err := extractFile(tr, filepath.Join(dir, filepath.FromSlash(h.Name)), h.Size); err != nil {
			return nil, err
		}
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for f := range want {
			missing = append(missing, f)
		}
		slices.Sort(missing)
		return nil, fmt.Errorf("backup is truncated: %s missing", strings.Join(missing, ", "))
	}
	scope, err := verify(filepath.Join(dir, l.Store))
	if err != nil {
		return nil, err
	}
	if scope != m.IDScope {
		return nil, fmt.Errorf("backup manifest says ID scope %s but its store holds %s", m.IDScope, scope)
	}
	return m, nil
}

// allowed says whether name is the store or a clean path under one of Dirs.
func (l Layout) allowed(name string) bool {
	if name == l.Store || slices.Contains(l.Files, name) {
		return true
	}
	if name != path.Clean(name) || path.IsAbs(name) || strings.HasPrefix(name, "../") {
		return false
	}
	for _, d := range l.Dirs {
		if strings.HasPrefix(name, d+"/") {
			return true
		}
	}
	return false
}

func extractFile(r io.Reader, dst string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, r, size); err != nil {
		f.Close()
		return fmt.Errorf("read backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Force moves an existing state (store, Dirs) aside into
	// pre-restore-<time>/ instead of refusing.
	Force bool
	Now   time.Time
}

// Restore replaces the state in l.StateDir with the archive read from r. It
// refuses while a process holds the store's lock (edgeprovd running), and
// refuses to replace an existing store unless opts.Force. Files get the state
// directory's owner, so a restore run as root leaves a state the service user
// can open.
func Restore(r io.Reader, l Layout, verify VerifyFunc, opts RestoreOptions) (*Manifest, error) {
	if err := os.MkdirAll(l.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	storePath := filepath.Join(l.StateDir, l.Store)
	if f, err := os.OpenFile(storePath, os.O_RDWR, 0); err == nil {
		defer f.Close()
		// The same lock bbolt takes: held, it means edgeprovd is serving this store.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return nil, fmt.Errorf("%s is locked: stop edgeprovd before restoring (systemctl stop edgeprovd)", storePath)
		}
		if !opts.Force {
			return nil, fmt.Errorf("%s already holds a store; restore --force moves the current state aside first", l.StateDir)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	stamp := opts.Now.UTC().Format("20060102T150405Z")
	staging := filepath.Join(l.StateDir, ".restore-"+stamp)
	m, err := Extract(r, staging, l, verify)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	if err := chownLike(staging, l.StateDir); err != nil {
		return nil, err
	}
	top := append(append([]string{l.Store}, l.Dirs...), l.Files...)
	aside := filepath.Join(l.StateDir, "pre-restore-"+stamp)
	for _, name := range top {
		cur := filepath.Join(l.StateDir, name)
		if _, err := os.Lstat(cur); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.MkdirAll(aside, 0o700); err != nil {
			return nil, err
		}
		if err := os.Rename(cur, filepath.Join(aside, name)); err != nil {
			return nil, fmt.Errorf("move current state aside: %w", err)
		}
	}
	for _, name := range top {
		src := filepath.Join(staging, name)
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.Rename(src, filepath.Join(l.StateDir, name)); err != nil {
			return nil, fmt.Errorf("restore %s: %w", name, err)
		}
	}
	if d, err := os.Open(l.StateDir); err == nil {
		d.Sync()
		d.Close()
	}
	return m, nil
}

// chownLike gives everything under dir the owner of ref, when run as root.
func chownLike(dir, ref string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, err := os.Stat(ref)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || (sys.Uid == 0 && sys.Gid == 0) {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(sys.Uid), int(sys.Gid))
	})
}
