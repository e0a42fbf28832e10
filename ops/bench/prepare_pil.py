"""Reference for `ithn-dist bench prepare`: the Pillow pipeline a Python prepare script would
run per image (open, decode, resize the shorter side with antialiased bilinear like
torchvision's Resize, encode JPEG quality 95), single process, timed over the files given on
stdin (one path per line). Prints {"images": n, "seconds": t, "cpu_seconds": c} as JSON (c: this
process's CPU time over the same loop)."""
import io
import json
import sys
import time

from PIL import Image


def main():
    side = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    paths = [line.strip() for line in sys.stdin if line.strip()]
    start, cpu0 = time.perf_counter(), time.process_time()
    for p in paths:
        img = Image.open(p)
        img.load()
        w, h = img.size
        if w <= h:
            size = (side, int(side * h / w))
        else:
            size = (int(side * w / h), side)
        img = img.resize(size, Image.BILINEAR)
        img.save(io.BytesIO(), format="JPEG", quality=95)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(json.dumps({"images": len(paths), "seconds": seconds, "cpu_seconds": cpu}))


if __name__ == "__main__":
    main()
