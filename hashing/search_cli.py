"""Image search from the command line: index a folder with a trained run, query it.

  python -m hashing.search_cli index --workdir=runs/dsh/bits-48 --images=photos/ --out=photos.idx
  python -m hashing.search_cli query --index=photos.idx --workdir=runs/dsh/bits-48 \\
    query1.png [query2.png ...] [--top=10] [--radius=2] [--grid=grid.png]

`index` encodes every PNG/JPEG under --images (recursively) with the run's final model and
writes an index file (codes, relative paths, model hash). `query` encodes the query images with
the same run, checks that the index was built by that model, and prints, for each query, its
nearest indexed files with their Hamming distances (ties by index order); --grid also draws
the queries and their first 10 results as a PNG. The library API is `hashing.search`.
A user mistake ends with one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from hashing import index as hindex
from hashing import search
from hashing.errors import UserError


def _image_shape(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected H,W,C such as 32,32,3; got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m hashing.search_cli", description=__doc__.split("\n")[0]
  )
  commands = parser.add_subparsers(dest="command", required=True)
  for name, help_text in (
    ("index", "encode a folder of images into an index file"),
    ("query", "print the nearest indexed images of query images"),
  ):
    sub = commands.add_parser(name, help=help_text)
    sub.add_argument("--workdir", required=True, help="a finished training run's workdir")
    sub.add_argument(
      "--image-shape",
      type=_image_shape,
      default=None,
      help="H,W,C of the training images, for runs whose results.json lacks image_shape",
    )
    sub.add_argument("--batch-size", type=int, default=256, help="images encoded at once")
    if name == "index":
      sub.add_argument("--images", required=True, help="folder of PNG/JPEG images")
      sub.add_argument("--out", required=True, help="index file to write")
    else:
      sub.add_argument("--index", required=True, help="index file from the index command")
      sub.add_argument("images", nargs="+", help="query image files")
      sub.add_argument("--top", type=int, default=10, help="results per query (default 10)")
      sub.add_argument(
        "--radius", type=int, default=None, help="instead of --top: all within this distance"
      )
      sub.add_argument(
        "--grid", default=None, help="write a PNG of the queries and their first 10 results"
      )
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.batch_size < 1:
      raise UserError(f"--batch-size={args.batch_size} must be >= 1")
    model = search.TrainedModel.load(args.workdir, image_shape=args.image_shape)
    if args.command == "index":
      start = time.perf_counter()
      code_index = search.build_index(model, args.images, args.batch_size)
      hindex.save(args.out, code_index)
      print(
        f"indexed {len(code_index)} images ({model.num_bits}-bit codes) into {args.out} in "
        f"{time.perf_counter() - start:.1f} s"
      )
      return 0
    if args.top < 1:
      raise UserError(f"--top={args.top} must be >= 1")
    if args.radius is not None and args.radius < 0:
      raise UserError(f"--radius={args.radius} must be >= 0")
    code_index = hindex.load(args.index, num_bits=model.num_bits, model_hash=model.model_hash)
    results = search.search(code_index, model, args.images, top=args.top, radius=args.radius)
    for query, (ids, distances) in zip(args.images, results, strict=True):
      print(f"query {query}: {len(ids)} results")
      for rank, (item, d) in enumerate(zip(ids, distances, strict=True), start=1):
        print(f"{rank:5d}  {int(d):3d}  {item}")
    if args.grid:
      columns = max(1, min(10, max(len(ids) for ids, _ in results)))
      search.write_grid(args.grid, args.images, results, code_index, columns=columns)
      print(f"grid of the queries and their first {columns} results in {args.grid}")
  except UserError as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
