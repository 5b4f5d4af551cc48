"""Synthetic but realistic customer-service messages, Chinese and English, for benchmarks.

Each message is a template filled with slot values (products, order numbers, cities, amounts), so
the data has what real support data has: many near-identical templated rows, exact repeats, short
and long texts in both languages, and labels that mostly follow the template.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

PRODUCTS_EN = [
    "phone",
    "laptop",
    "headset",
    "charger",
    "washing machine",
    "blender",
    "camera",
    "sofa",
    "jacket",
    "watch",
]
PRODUCTS_ZH = ["手机", "笔记本电脑", "耳机", "充电器", "洗衣机", "榨汁机", "相机", "沙发", "外套", "手表"]
CITIES_EN = ["Shanghai", "Beijing", "London", "Berlin", "Austin", "Toronto", "Sydney", "Madrid"]
CITIES_ZH = ["上海", "北京", "广州", "深圳", "杭州", "成都", "武汉", "南京"]
TEMPLATES = {
    "shipping": [
        "Where is my {p}? I ordered it {d} days ago and the tracking number {o} has not moved since {c}.",
        "My parcel {o} with the {p} is stuck in {c}, can you check the delivery status please",
        "order {o} still not delivered, it was supposed to arrive {d} days ago",
        "我的{pz}订单{o}已经{d}天了还没到，物流一直显示在{cz}，麻烦帮我查一下。",
        "快递{o}怎么还在{cz}，{pz}什么时候能送到？",
        "请问订单号{o}的{pz}发货了吗",
    ],
    "refund": [
        "I returned the {p} {d} days ago (order {o}) and still have not received my refund of ${m}.",
        "Please refund ${m} for order {o}, the {p} arrived broken.",
        "refund for {o}??? it has been {d} days",
        "我在{d}天前退回了{pz}，订单{o}，{m}元的退款到现在还没到账。",
        "{pz}收到就是坏的，订单{o}，申请退款{m}元。",
        "退款怎么还没到，订单号{o}",
    ],
    "account": [
        "I cannot log in to my account, it says my password is wrong but I reset it {d} times.",
        "How do I change the phone number on my account? The old one stopped working in {c}.",
        "account locked after {d} failed logins, please help",
        "我的账号登录不上了，一直提示密码错误，已经重置了{d}次。",
        "怎么修改绑定的手机号？原来的号码在{cz}已经停用了。",
        "账号被锁了怎么办",
    ],
    "product": [
        "Does the {p} come with a warranty? I want to buy two for my office in {c}.",
        "Is the {p} compatible with the charger I bought {d} days ago (order {o})?",
        "what colours does the {p} come in",
        "这款{pz}有保修吗？我想在{cz}给公司买两台。",
        "{pz}和我{d}天前买的充电器兼容吗？订单{o}",
        "{pz}有几种颜色",
    ],
}
TAILS = ["", "", "", " Thanks!", " Thank you.", " 谢谢！", " 急！", " ASAP", " :(", " 麻烦尽快处理。"]


def message(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(list(TEMPLATES))
    # One message in twenty is a copy-pasted repeat of a recent one, as in real support queues.
    template = rng.choice(TEMPLATES[label])
    i = rng.randrange(len(PRODUCTS_EN))
    text = template.format(
        p=PRODUCTS_EN[i],
        pz=PRODUCTS_ZH[i],
        o=rng.randrange(10**7, 10**8),
        d=rng.randint(1, 30),
        c=rng.choice(CITIES_EN),
        cz=rng.choice(CITIES_ZH),
        m=rng.randint(5, 2000),
    )
    if rng.random() < 0.03:  # a few rows carry a label a second annotator would not give
        label = rng.choice(list(TEMPLATES))
    return text + rng.choice(TAILS), label


def write_messages(path: Path, rows: int, seed: int = 0, extra_columns: bool = True) -> Path:
    """`rows` messages as CSV: id, text, label, channel, created (ids with leading zeros, as exports have)."""
    rng = random.Random(seed)
    recent: list[tuple[str, str]] = []
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "label", "channel", "created"] if extra_columns else ["text", "label"])
        for i in range(rows):
            if recent and rng.random() < 0.05:
                text, label = rng.choice(recent)
            else:
                text, label = message(rng)
                recent = [*recent, (text, label)][-50:]
            if extra_columns:
                created = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                writer.writerow([f"{i:07d}", text, label, rng.choice(["email", "chat", "app"]), created])
            else:
                writer.writerow([text, label])
    return path
