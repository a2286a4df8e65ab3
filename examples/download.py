"""A streaming download with a progress bar: memory stays flat however large the file.

python examples/download.py URL OUTPUT_FILE [--progress]

The bar (plain text, on stderr) is drawn when stderr is a terminal, or always with
``--progress``.
"""

import asyncio
import sys

import glasspool


def bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {done * 100 // total:3d}% of {total} bytes"


async def download(url: str, path: str, progress: bool) -> None:
    async with glasspool.Client() as client, client.stream("GET", url) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length") or 0) or None
        done = 0
        with open(path, "wb") as out:
            async for chunk in response.aiter_bytes():
                out.write(chunk)
                done += len(chunk)
                if total and progress:
                    print(bar(done, total), end="", file=sys.stderr, flush=True)
        if total and progress:
            print(file=sys.stderr)
        print(f"{done} bytes written to {path}")


if __name__ == "__main__":
    show = "--progress" in sys.argv[3:] or sys.stderr.isatty()
    asyncio.run(download(sys.argv[1], sys.argv[2], show))
