"""Chat prompts: the plain fallback (and its flag), the sandbox, and errors that name the file."""

import json

import pytest

from lmlab.errors import ConfigError, UnsafeFormat
from lmlab.generate.chat import PLAIN_STOP, render_chat

HI = [{"role": "user", "content": "Hi"}]


def tokenizer_dir(tmp_path, template=None, **config):
    d = tmp_path / "tok"
    d.mkdir(exist_ok=True)
    if template is not None:
        config["chat_template"] = template
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    return d


def test_no_template_gives_the_plain_prompt_and_says_so(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    chat = render_chat(tokenizer_dir(tmp_path, eos_token="</s>"), messages)
    assert chat.template == "plain" and chat.stop == [PLAIN_STOP]
    assert chat.text == "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
    assert render_chat(tmp_path / "elsewhere", HI, add_generation_prompt=False).text == "User: Hi"


def test_the_model_template_says_so(tmp_path):
    d = tokenizer_dir(tmp_path, "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}",
                      bos_token={"content": "<s>", "special": True})
    chat = render_chat(d, HI)
    assert (chat.text, chat.template, chat.stop) == ("<s>[user]Hi", "model", [])


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ raise_exception.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ namespace.__init__ }}",
    "{% set ns = namespace(_x=1) %}",
    "{% set ns = namespace() %}{% set ns._hidden = 1 %}",
    "{{ messages.append(1) }}",
    "{{ messages[0].update(role='system') }}",
    "{{ dict.__call__.__func__ }}",
    "{{ self._TemplateReference__context }}",
])
def test_templates_that_reach_python_internals_are_refused(template, tmp_path):
    with pytest.raises(UnsafeFormat, match=r"tokenizer_config.json \(chat_template\): the chat template tried "
                                           "to reach Python internals"):
        render_chat(tokenizer_dir(tmp_path, template), HI)


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok/chat_template.jinja").write_text("{% for m in messages %}\n{{ m.content }\n")
    with pytest.raises(ConfigError, match=r"chat_template.jinja: line 2: the chat template is not valid Jinja"):
        render_chat(tmp_path / "tok", HI)


def test_bad_messages_are_named(tmp_path):
    d = tokenizer_dir(tmp_path, "{{ messages[0].content }}")
    with pytest.raises(ConfigError, match=r"messages\[1\]"):
        render_chat(d, [{"role": "user", "content": "a"}, {"role": "user"}])
    with pytest.raises(ConfigError, match="non-empty"):
        render_chat(d, [])
    with pytest.raises(ConfigError, match="refused them"):  # an undefined variable used as a value
        render_chat(tokenizer_dir(tmp_path, "{{ missing.field }}"), HI)


def test_bad_tokenizer_config_is_named(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok/tokenizer_config.json").write_text('{"chat_template": "x",\n oops}')
    with pytest.raises(Exception, match=r"tokenizer_config.json: line 2: not valid JSON"):
        render_chat(tmp_path / "tok", HI)


# -- lmlab generate --chat -------------------------------------------------------------------------

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def chat_models(bpe_dir, bpe, tmp_path_factory):
    """The same tiny decoder twice: without a chat template, and with a ChatML one."""
    import shutil

    from lmlab.model import save_model

    from .conftest import tiny

    root = tmp_path_factory.mktemp("chat")
    shutil.copytree(bpe_dir, root / "tok")
    (root / "tok/chat_template.jinja").write_text(CHATML)
    model = tiny("gpt2", vocab_size=bpe.vocab_size, max_seq_len=128)
    save_model(model, root / "plain", tokenizer_dir=bpe_dir)
    save_model(model, root / "templated", tokenizer_dir=root / "tok")
    return root


def expected_reply(model_dir, prompt, stop=()):
    from lmlab.generate import generate, load_for_generation

    model, tok = load_for_generation(model_dir)
    return generate(model, tok, prompt, max_new_tokens=8, temperature=0, stop=list(stop)).text


def test_cli_chat_uses_the_model_template(chat_models, capsys):
    from lmlab.cli import main

    args = ["generate", str(chat_models / "templated"), "--chat", "--prompt", "你好", "--max-new-tokens", "8",
            "--temperature", "0", "--dtype", "float32"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    prompt = "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    reply = expected_reply(chat_models / "templated", prompt)
    assert out == reply + "\n" and reply.strip()  # the reply only, no echo
    assert "[chat: the model's chat template]" in err


def test_cli_chat_on_a_run_directory_uses_its_model_template(chat_models, capsys, tmp_path):
    import shutil

    from lmlab.cli import main

    shutil.copytree(chat_models / "templated", tmp_path / "run" / "model")  # a run directory: OUT/model
    assert main(["generate", str(tmp_path / "run"), "--chat", "--prompt", "你好", "--max-new-tokens", "2",
                 "--dtype", "float32"]) == 0
    assert "[chat: the model's chat template]" in capsys.readouterr().err


def test_cli_chat_falls_back_to_plain_and_says_so(chat_models, capsys, tmp_path):
    from lmlab.cli import main

    (tmp_path / "chat.json").write_text(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}]}))
    args = ["generate", str(chat_models / "plain"), "--messages", str(tmp_path / "chat.json"), "--prompt", "Bye",
            "--max-new-tokens", "8", "--temperature", "0", "--dtype", "float32"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    prompt = "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
    assert out == expected_reply(chat_models / "plain", prompt, [PLAIN_STOP]) + "\n"
    assert "no chat template; plain System/User/Assistant prompt" in err


@pytest.mark.parametrize("content, message", [
    ("[{\"role\": \"user\",\n \"content\": }]", "chat.json: line 2: not valid JSON"),
    ('{"role": "user", "content": "hi"}', "expected a list of"),
    ('[{"role": "user"}]', "messages[0]: must be an object with string 'role' and 'content'"),
])
def test_cli_bad_messages_files_are_clear_errors(chat_models, capsys, tmp_path, content, message):
    from lmlab.cli import main

    (tmp_path / "chat.json").write_text(content)
    assert main(["generate", str(chat_models / "plain"), "--messages", str(tmp_path / "chat.json")]) == 2
    assert message in capsys.readouterr().err


def test_cli_needs_a_prompt_or_messages(chat_models, capsys):
    from lmlab.cli import main

    assert main(["generate", str(chat_models / "plain"), "--chat"]) == 2
    assert "error: --prompt" in capsys.readouterr().err
