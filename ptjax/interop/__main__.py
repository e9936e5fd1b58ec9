"""Command line: ptjax prompt exports to and from Hugging Face PEFT prompt adapters.

    python -m ptjax.interop export --restore RUN/export --to RUN/peft [--prompt-index K] [--force]
    python -m ptjax.interop import --adapter PEFT_DIR --to RUN/imported [--model NAME]

export writes adapter_config.json + adapter_model.safetensors (what PeftModel.from_pretrained
loads), prompt_encoder.safetensors (the encoder weights under PEFT's names, to train on in PEFT)
and ptjax_provenance.json. import writes a prompt export that `main.py --config.mode=eval
--config.restore=DIR` and serving load. See ptjax/interop/peft.py for the placement rules.
Bad input ends with one line `error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ptjax import cli
from ptjax.errors import InputError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ptjax.interop", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="ptjax prompt export -> PEFT adapter folder")
    export.add_argument("--restore", required=True, help="a prompt export (RUN/export) or a workdir holding one")
    export.add_argument("--to", required=True, help="the PEFT adapter folder to write")
    export.add_argument("--prompt-index", type=int, default=None, help="which prompt of a bank to export")
    export.add_argument("--force", action="store_true",
                        help="export even where PEFT would place the prompt differently (outputs will differ)")
    export.add_argument("--model", default=None, help="the backbone (default: the one the export names)")
    imp = commands.add_parser("import", help="PEFT prompt adapter -> ptjax prompt export")
    imp.add_argument("--adapter", required=True, help="folder with adapter_config.json + adapter_model.safetensors")
    imp.add_argument("--to", required=True, help="the export folder to write")
    imp.add_argument("--model", default=None, help="the backbone (default: the adapter's base_model_name_or_path)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from ptjax.interop import peft
    from ptjax.models.loading import open_backbone

    try:
        if args.command == "export":
            backbone = open_backbone(args.model) if args.model else None
            notes = peft.export_adapter(args.restore, args.to, prompt_index=args.prompt_index, force=args.force,
                                        backbone=backbone)
            result = {"adapter": args.to, "notes": notes}
        else:
            path = peft.import_adapter(args.adapter, args.to, model=args.model)
            result = {"export": str(path)}
    except InputError as err:
        cli.fail(str(err))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
