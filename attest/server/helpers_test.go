package server_test

import (
	"crypto/tls"
	"net/http"

	"github.com/osguard/osguard/attest/client"
)

func tlsConfig(c tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
}

func clientWithCA(pem []byte) (*http.Client, error) { return client.New(pem) }
