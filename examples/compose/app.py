"""A stand-in app for the compose example: it knows nothing about llmtap.

The official OpenAI SDK reads OPENAI_BASE_URL, which points at llmtap.
"""
from openai import OpenAI

client = OpenAI()
messages = [{"role": "user", "content": "Say hello in five words."}]
reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
print(reply.choices[0].message.content)
messages += [
    {"role": "assistant", "content": reply.choices[0].message.content},
    {"role": "user", "content": "Now in French."},
]
stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
