"""A streaming download with a progress line: memory stays flat however large the file.

python examples/download.py URL OUTPUT_FILE
"""

import asyncio
import sys

import glasspool


async def download(url: str, path: str) -> None:
    async with glasspool.Client() as client, client.stream("GET", url) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length", 0)) or None
        done = 0
        with open(path, "wb") as out:
            async for chunk in response.aiter_bytes():
                out.write(chunk)
                done += len(chunk)
                if total and sys.stderr.isatty():
                    print(f"\r{done * 100 // total:3d}% of {total} bytes", end="", file=sys.stderr)
        print(f"{done} bytes written to {path}")


if __name__ == "__main__":
    asyncio.run(download(sys.argv[1], sys.argv[2]))
