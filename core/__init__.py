"""What every app builds on: shared services that know nothing of jobs or credits."""
