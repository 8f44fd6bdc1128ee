"""Test helpers shipped with the package: a mock provider over HTTP and a server runner."""
