package qemu

// Name is the backend's registry name.
const Name = "qemu"
