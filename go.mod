module github.com/edgeprov/edgeprov

go 1.26

require (
	github.com/ThalesGroup/crypto11 v1.6.2
	github.com/google/go-tpm v0.9.8
	github.com/miekg/pkcs11 v1.1.2
	go.etcd.io/bbolt v1.4.3
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/pkg/errors v0.9.1 // indirect
	github.com/thales-e-security/pool v0.0.2 // indirect
	golang.org/x/sys v0.29.0 // indirect
)
