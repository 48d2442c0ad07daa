"""A tiny random Llama with a byte-level BPE tokenizer, saved locally: the stand-in Hugging Face model of the teacher tests."""
from pathlib import Path


def make_tiny_bpe_llama(out: Path, # the directory to save model and tokenizer to
                        texts: list[str], # what the BPE vocabulary is trained on
                        chat_template: bool = True, # give the tokenizer a (minimal) chat template
                        padding_side: str | None = "left", # the tokenizer's padding side (None: its default)
                       ) -> Path:
    "A tiny random Llama and a byte-level BPE tokenizer (optionally with a chat template), saved to `out`."
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tk.train_from_iterator(texts + ["Let's think step by step. 3 + 4 = 7. The answer is 7. #### 7"] * 5,
                           trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    kw = {"padding_side": padding_side} if padding_side else {}
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", **kw)
    if chat_template:
        tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                             "{% if add_generation_prompt %}assistant:{% endif %}")
    tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out
