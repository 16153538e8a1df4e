#!/usr/bin/env python3
"""Prints YAML files as one JSON object {"path": [document, ...], ...} (python3-yaml), for tests that check
YAML (the Kubernetes manifests in deploy/k8s) from C++. Exit code 1 with the file and the parser's message when a
file is not valid YAML."""
import json
import sys

import yaml

out = {}
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            out[path] = [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        print(f"{path}: {e}", file=sys.stderr)
        sys.exit(1)
json.dump(out, sys.stdout)
