// Package userconfig reads ~/.heyo/config.yaml, the user's settings.
// Every key is optional; a missing file means all defaults:
//
//	# Registry refs of the default image, per backend. When a sandbox needs
//	# the default image and it is missing, heyvm pulls this ref; with none,
//	# it builds the image locally (Linux only).
//	default_image_ref:
//	  qemu: ""
//	  apple_virt: ""
//	# Registries on this machine that may be reached over plain HTTP
//	# (the config-file form of `--insecure`; loopback addresses only).
//	insecure_registries: []
package userconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/heyvm/heyvm/internal/layout"
)

// EnvDefaultImageRef overrides default_image_ref for every backend.
const EnvDefaultImageRef = "HEYVM_DEFAULT_IMAGE_REF"

// Config is config.yaml.
type Config struct {
	DefaultImageRef    map[string]string `yaml:"default_image_ref"`
	InsecureRegistries []string          `yaml:"insecure_registries"`
}

// Load reads the config of a state root. A missing file is the defaults;
// a broken one is an error that names the file, since guessing around it
// could pull from a registry the user did not mean.
func Load(root layout.Root) (*Config, error) {
	c := &Config{}
	b, err := os.ReadFile(root.ConfigFile())
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // empty file: defaults
		return nil, fmt.Errorf("%s: %v: fix it or remove it (the keys are in the README)", root.ConfigFile(), err)
	}
	return c, nil
}

// DefaultRef is the ref to pull the default image from for backend, or "".
func (c *Config) DefaultRef(backend string) string {
	if v := os.Getenv(EnvDefaultImageRef); v != "" {
		return v
	}
	return c.DefaultImageRef[backend]
}

// Insecure reports whether plain HTTP is allowed for a registry host.
func (c *Config) Insecure(host string) bool {
	for _, h := range c.InsecureRegistries {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}
