"""lmlab's chat-template rendering equals transformers' apply_chat_template(tokenize=False):
20 conversations × 3 templates written here (ChatML, Llama 3, and one with a default system
prompt that also uses tojson, namespace and raise_exception), each template stored the three
ways a tokenizer directory can hold it. The tokenizer is built locally (no network)."""

import json

import pytest

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from lmlab.errors import ConfigError  # noqa: E402
from lmlab.generate.chat import load_chat_template, render_chat  # noqa: E402

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = """{{- bos_token }}
{%- set date_string = strftime_now("%d %b %Y") %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

SYSTEM_DEFAULT = """{%- if messages[0]['role'] == 'system' %}
{%- set system = messages[0]['content'] %}
{%- set loop_messages = messages[1:] %}
{%- else %}
{%- set system = 'You are careful. Say "no" <b>politely</b> — 謝謝.' %}
{%- set loop_messages = messages %}
{%- endif %}
<<SYS>>{{ system | tojson }}<</SYS>>
{% set ns = namespace(turn=0) %}
{% for message in loop_messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {% endif %}
    {% if message['role'] == 'user' %}
        {% set ns.turn = ns.turn + 1 %}
[INST {{ ns.turn }}] {{ message['content'] }} [/INST]
    {%- else %}
 {{ message['content'] }}{{ eos_token }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}{{ 'Answer:' }}{% endif %}"""

TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3, "system-default": SYSTEM_DEFAULT}
STORAGE = ["chat_template.jinja", "tokenizer_config string", "tokenizer_config named list"]

TEXTS = ["Hello!", "  two spaces around  ", "line one\nline two", "你好，世界", 'quotes "x" & <tag>',
         "{{ not a template }}", "tab\there", "é ü ß", "", "the last turn"]


def conversations() -> list[tuple[list[dict], bool]]:
    """20 (messages, add_generation_prompt): with and without a system message, 1 to 4 user turns,
    ending on a user or an assistant turn."""
    out = []
    for n in range(10):
        messages = [{"role": "system", "content": f"You are bot {n}. " + TEXTS[n]}] if n % 2 == 0 else []
        turns = 1 + n % 4
        for t in range(turns):
            messages.append({"role": "user", "content": TEXTS[(n + t) % len(TEXTS)]})
            if t < turns - 1 or n % 3 == 0:
                messages.append({"role": "assistant", "content": TEXTS[(n + 2 * t + 1) % len(TEXTS)]})
        out += [(messages, True), (messages, False)]
    return out


@pytest.fixture(scope="module")
def base_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["[UNK]", "<|begin_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>", "[PAD]"]
    vocab = {t: i for i, t in enumerate(specials + ["hello", "world"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    return tok


def save(base_tokenizer, template: str, storage: str, directory):
    """A tokenizer directory holding `template` as `storage` says; → transformers' tokenizer of it."""
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=base_tokenizer, bos_token="<|begin_of_text|>",
                                              eos_token="<|eot_id|>", unk_token="[UNK]", pad_token="[PAD]",
                                              chat_template=template)
    hf.save_pretrained(directory)
    if storage != "chat_template.jinja":
        (directory / "chat_template.jinja").unlink()
        path = directory / "tokenizer_config.json"
        config = json.loads(path.read_text())
        config["chat_template"] = template if storage == "tokenizer_config string" else [
            {"name": "tool_use", "template": "unused {{ messages }}"}, {"name": "default", "template": template}]
        path.write_text(json.dumps(config))
    return transformers.AutoTokenizer.from_pretrained(directory)


@pytest.mark.parametrize("name", list(TEMPLATES))
@pytest.mark.parametrize("storage", STORAGE)
def test_rendering_equals_apply_chat_template(name, storage, base_tokenizer, tmp_path, figure):
    hf = save(base_tokenizer, TEMPLATES[name], storage, tmp_path / "tok")
    assert load_chat_template(tmp_path / "tok").source == TEMPLATES[name]
    checked = 0
    for messages, add in conversations():
        expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
        chat = render_chat(tmp_path / "tok", messages, add_generation_prompt=add)
        assert chat.template == "model" and chat.stop == []
        assert chat.text == expected, (messages, add)
        checked += 1
    figure(conversations=checked)
    assert checked == 20
    if name == "system-default":  # the default system prompt, through a tojson that escapes no HTML
        assert '<<SYS>>"You are careful. Say \\"no\\" <b>politely</b> — 謝謝."<</SYS>>' in chat.text


def test_raise_exception_is_a_config_error_as_transformers_refuses(base_tokenizer, tmp_path):
    hf = save(base_tokenizer, SYSTEM_DEFAULT, "chat_template.jinja", tmp_path / "tok")
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(Exception, match="must alternate"):
        hf.apply_chat_template(bad, tokenize=False)
    with pytest.raises(ConfigError, match="must alternate"):
        render_chat(tmp_path / "tok", bad)


def test_a_list_without_default_is_refused_by_name(base_tokenizer, tmp_path):
    save(base_tokenizer, CHATML, "tokenizer_config named list", tmp_path / "tok")
    path = tmp_path / "tok/tokenizer_config.json"
    config = json.loads(path.read_text())
    config["chat_template"] = [{"name": "tool_use", "template": CHATML}]
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"tokenizer_config.json \(chat_template\).*'default'.*tool_use"):
        render_chat(tmp_path / "tok", [{"role": "user", "content": "hi"}])


def test_special_tokens_come_from_special_tokens_map_when_the_config_lacks_them(base_tokenizer, tmp_path):
    """Older directories: special_tokens_map.json (AddedToken objects) and no added_tokens_decoder."""
    hf = save(base_tokenizer, "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}", "tokenizer_config string",
              tmp_path / "tok")
    path = tmp_path / "tok/tokenizer_config.json"
    config = json.loads(path.read_text())
    for key in ("bos_token", "eos_token", "pad_token", "added_tokens_decoder"):
        config.pop(key, None)
    path.write_text(json.dumps(config))
    (tmp_path / "tok/special_tokens_map.json").write_text(json.dumps(
        {"bos_token": {"content": "<|begin_of_text|>", "lstrip": False}, "eos_token": "<|eot_id|>",
         "pad_token": "[PAD]"}))
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    messages = [{"role": "user", "content": "hi"}]
    expected = again.apply_chat_template(messages, tokenize=False)
    assert expected == hf.apply_chat_template(messages, tokenize=False) == "<|begin_of_text|>|<|eot_id|>|[PAD]"
    assert render_chat(tmp_path / "tok", messages).text == expected
