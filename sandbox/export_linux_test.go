package sandbox

// InstanceDir returns the Manager's own directory in its data directory.
func (m *Manager) InstanceDir() string { return m.instDir }
