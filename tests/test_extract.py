from inversecoder.builders.extract import extract_code, looks_like_python_code


def test_first_fenced_block_is_kept_with_its_language():
    response = "Here you go:\n```python\ndef f(x):\n    return x + 1\n```\nUsage:\n```python\nprint(f(1))\n```\n"
    found = extract_code(response)
    assert found.code_block == "```python\ndef f(x):\n    return x + 1\n```"
    assert found.language == "python"
    assert "print(f(1))" not in found.code_block


def test_language_aliases_are_normalized_and_untagged_fences_kept():
    assert extract_code("```js\nlet a = 1;\n```").language == "javascript"
    assert extract_code("```c++\nint main() {}\n```").language == "cpp"
    untagged = extract_code("```\nSELECT 1;\n```")
    assert untagged.code_block == "```\nSELECT 1;\n```" and untagged.language == ""


def test_unclosed_fence_keeps_the_whole_rest_without_chopping():
    found = extract_code("Try this:\n```python\ndef g():\n    return 42")
    assert found.code == "def g():\n    return 42"  # upstream chopped the last character
    assert found.code_block is not None and found.code_block.endswith("return 42\n```")


def test_fence_closed_on_the_code_line():
    assert extract_code("```python\nx = 1```").code == "x = 1"


def test_unfenced_python_is_wrapped_but_words_and_sentences_are_not_code():
    found = extract_code("def add(a, b):\n    return a + b\n")
    assert found.code_block == "```python\ndef add(a, b):\n    return a + b\n```"
    for text in ["Yes", "Sure.", "42", "hello", "The answer is that recursion uses a stack."]:
        result = extract_code(text)
        assert result.code_block is None and result.reason == "no code block and not Python code", text


def test_empty_inputs_have_reasons():
    assert extract_code("").reason == "empty response"
    assert extract_code("   \n").reason == "empty response"
    assert extract_code("```python\n\n```").reason == "empty code block"


def test_looks_like_python_code():
    assert looks_like_python_code("print('hi')")
    assert looks_like_python_code("import os")
    assert not looks_like_python_code("x")
    assert not looks_like_python_code("def broken(:")
