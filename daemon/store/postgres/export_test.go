package postgres

import "context"

// ExecForTest runs a statement (tests only).
func (s *Store) ExecForTest(ctx context.Context, sql string) error {
	_, err := s.pool.Exec(ctx, sql)
	return err
}
