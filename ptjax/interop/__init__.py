"""Interoperability with other prompt-tuning tools: Hugging Face PEFT prompt adapters (peft.py).

    python -m ptjax.interop export --restore RUN/export --to RUN/peft [--prompt-index K] [--force]
    python -m ptjax.interop import --adapter PEFT_DIR --to RUN/imported [--model NAME]
"""
