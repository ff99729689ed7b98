#!/usr/bin/env bash
# Placeholder: replaced by the Docker build-and-run smoke test (issue 7).
echo "docker smoke test: not implemented yet"
