"""A worker process of :func:`diffisp.data.decoded.decoded_cache`: decodes the shards listed in
the JSON file named on its command line and prints ``[[shard, dtype], ...]``; a
:class:`~diffisp.errors.DataError` (a corrupt file, named) goes to standard error behind
:data:`~diffisp.data.decoded.ERROR_PREFIX`, exit status 3."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffisp.data.decoded import ERROR_PREFIX, DecodeRecipe, _decode_shard
from diffisp.errors import DataError


def main(request: str) -> int:
    try:
        tasks = json.loads(Path(request).read_text())
        results = [
            _decode_shard((DecodeRecipe(fit, size, pixels), files, directory, shard))
            for fit, size, pixels, files, directory, shard in tasks
        ]
    except DataError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return 3
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
