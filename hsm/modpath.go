package hsm

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// p11kitModuleDirs are where p11-kit's module registry lives: files
// "<name>.module" with a "module: /path/lib.so" line. Debian's softhsm2
// package installs /usr/share/p11-kit/modules/softhsm2.module.
var p11kitModuleDirs = []string{"/etc/pkcs11/modules", "/usr/share/p11-kit/modules"}

// defaultModuleDirs are searched for lib<name>.so and <name>.so.
func defaultModuleDirs() []string {
	triplet := map[string]string{
		"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "arm": "arm-linux-gnueabihf",
		"386": "i386-linux-gnu", "riscv64": "riscv64-linux-gnu", "ppc64le": "powerpc64le-linux-gnu",
		"s390x": "s390x-linux-gnu",
	}[runtime.GOARCH]
	var dirs []string
	if triplet != "" {
		dirs = append(dirs, "/usr/lib/"+triplet+"/pkcs11", "/usr/lib/"+triplet)
	}
	return append(dirs, "/usr/lib64/pkcs11", "/usr/lib64", "/usr/lib/pkcs11", "/usr/lib", "/usr/local/lib")
}

// modulePath returns the canonical path (symlinks resolved) of the module the
// URI names. crypto11 shares one initialised module per path string, so two
// spellings of one library must become one path, or the second C_Initialize
// fails and the first Close finalises the library under the other.
func modulePath(u *URI, dirs []string) (string, error) {
	p := u.ModulePath
	if p == "" {
		if u.ModuleName == "" {
			return "", fmt.Errorf("%w: the URI names no module: add ?module-path=/path/to/module.so", ErrModuleNotFound)
		}
		if dirs == nil {
			dirs = defaultModuleDirs()
		}
		var err error
		if p, err = findModule(u.ModuleName, p11kitModuleDirs, dirs); err != nil {
			return "", err
		}
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrModuleNotFound, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrModuleNotFound, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s is not a regular file", ErrModuleNotFound, p)
	}
	return filepath.Abs(real)
}

// findModule resolves an RFC 7512 module-name: first p11-kit's registry,
// then lib<name>.so and <name>.so in dirs. Names compare case-insensitively.
func findModule(name string, registries, dirs []string) (string, error) {
	for _, dir := range registries {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			base, ok := strings.CutSuffix(e.Name(), ".module")
			if !ok || !strings.EqualFold(base, name) {
				continue
			}
			if p := p11kitModule(filepath.Join(dir, e.Name())); p != "" {
				return p, nil
			}
		}
	}
	for _, dir := range dirs {
		for _, file := range []string{"lib" + name + ".so", name + ".so"} {
			p := filepath.Join(dir, file)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%w: module-name %q: no %s.module in %s and no lib%s.so in %s",
		ErrModuleNotFound, name, name, strings.Join(registries, ", "), name, strings.Join(dirs, ", "))
}

// p11kitModule returns the absolute "module:" path of a p11-kit module file,
// or "" (relative paths name p11-kit's own directory, which we do not guess).
func p11kitModule(file string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(key) == "module" {
			if p := strings.TrimSpace(val); filepath.IsAbs(p) {
				return p
			}
			return ""
		}
	}
	return ""
}
