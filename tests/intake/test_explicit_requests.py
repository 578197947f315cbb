"""Explicit requests for a person, table-tested per language: the UN languages (Arabic,
Chinese, English, French, Russian, Spanish) plus Portuguese, German, Japanese, Hindi,
Indonesian, Turkish (and Italian, Dutch). Realistic phrasings, informal ones, and the same
words without their diacritics; then near-misses that must stay with the AI (talk about
humans that asks for nothing, past tense, negations). The rule is in services/intake/explicit.py."""

from __future__ import annotations

import pytest

from services.intake import explicit

REQUESTS: dict[str, list[str]] = {
    "en": ["I want to talk to a human", "Can I speak to a real person please?", "agent", "Human please!",
           "connect me with an agent", "let me talk to someone", "I need a live agent",
           "can i talk to customer service", "Put me through to a representative",
           "I’d like to speak with somebody from your team"],
    "ar": ["أريد التحدث مع إنسان", "ممكن أكلم موظف؟", "عايز اكلم حد من خدمة العملاء", "أبغى أكلم موظف",
           "حوّلني إلى موظف خدمة العملاء", "اريد التحدث مع شخص حقيقي", "أُريدُ التَّحدُّثَ مع موظفٍ",
           "بدي موظف خدمة العملاء لو سمحت"],
    "zh": ["转人工", "我要人工客服", "請幫我轉人工", "我想和真人说话", "找客服", "人工", "可以跟客服聊一下吗？",
           "我要找真人客服"],
    "fr": ["Je veux parler à un humain", "je voudrais parler avec une personne", "Je veux parler a un humain",
           "Est-ce que je peux parler à un conseiller ?", "mettez-moi en relation avec un conseiller",
           "j'aimerais un agent svp", "je veux une vraie personne"],
    "ru": ["Хочу поговорить с человеком", "Соедините с оператором, пожалуйста", "позовите оператора",
           "можно живого человека?", "Оператор!", "дайте поговорить с живым человеком",
           "мне нужно связаться с менеджером", "переключите на специалиста"],
    "es": ["Quiero hablar con una persona", "¿Puedo hablar con un agente?", "quiero hablar con un humano",
           "pasame con un asesor", "Páseme con un operador por favor", "necesito un agente",
           "puedo hablar con alguien real?", "comunicarme con un asesor"],
    "pt": ["Quero falar com um atendente", "Gostaria de falar com uma pessoa", "quero falar com alguém",
           "quero falar com alguem", "me passa pra um atendente", "atendimento humano por favor",
           "preciso de um atendente", "Posso falar com um humano?"],
    "de": ["Ich möchte mit einem Menschen sprechen", "Kann ich mit einem Mitarbeiter reden?",
           "Ich will einen Mitarbeiter sprechen", "ich mochte mit einem menschen sprechen",
           "Verbinden Sie mich bitte mit einem Mitarbeiter", "kann ich mit jemandem sprechen?",
           "Mensch bitte", "gibt es hier einen echten Menschen?"],
    "ja": ["人間と話したい", "オペレーターに繋いでください", "オペレーターにつないで", "担当者と話せますか？",
           "スタッフと話したいです", "オペレーター", "人と話したいです", "有人対応をお願いします",
           "ｵﾍﾟﾚｰﾀｰにつないで"],
    "hi": ["मुझे किसी इंसान से बात करनी है", "एजेंट से बात कराओ", "क्या मैं किसी व्यक्ति से बात कर सकता हूँ?",
           "कस्टमर केयर से बात करनी है", "असली इंसान चाहिए", "kisi insaan se baat karni hai",
           "agent se baat karao", "mujhe customer care se baat karni hai"],
    "id": ["Saya mau bicara dengan manusia", "bisa bicara dengan CS?", "tolong sambungkan ke agen",
           "mau ngobrol sama orang asli", "hubungkan saya dengan customer service", "minta admin dong",
           "Saya ingin berbicara dengan petugas"],
    "tr": ["Bir insanla konuşmak istiyorum", "insanla konusmak istiyorum", "Müşteri temsilcisine bağlar mısınız?",
           "musteri temsilcisine baglar misiniz", "canlı destek", "yetkiliyle görüşmek istiyorum",
           "Gerçek bir kişiyle konuşabilir miyim?", "temsilci lütfen", "İnsanla konuşmak istiyorum"],
    "it": ["Vorrei parlare con un operatore", "posso parlare con una persona?"],
    "nl": ["Ik wil met een medewerker praten", "Kan ik een echte mens spreken?"],
}

NEAR_MISSES: dict[str, list[str]] = {
    "en": ["What are your opening hours?", "The human body has 206 bones", "My agent number is 4",
           "I talked to a human yesterday and it was fine", "I don't want to talk to a human",
           "Is the person in the photo your CEO?", "Do you sell human hair wigs?", "no need to talk to an agent",
           "I talk to people every day"],
    "ar": ["كم عظمة في جسم الإنسان؟", "تحدثت مع موظف أمس", "لا أريد التحدث مع موظف", "متى تفتحون؟",
           "حقوق الانسان"],
    "zh": ["人工智能是什么？", "人类的身体有多少块骨头", "我昨天和客服聊过了", "不用转人工", "你们几点开门？"],
    "fr": ["Quel est le prix ?", "Personne ne répond au téléphone", "Je ne veux pas parler à un humain",
           "J'ai parlé à un conseiller hier", "le corps humain"],
    "ru": ["Человек-паук лучший фильм", "Я говорил с оператором вчера", "не надо соединять с оператором",
           "Сколько стоит доставка?", "тело человека"],
    "es": ["¿Dónde está mi pedido?", "el cuerpo humano", "ya hablé con un agente ayer",
           "no quiero hablar con una persona", "¿Cuánto cuesta?"],
    "pt": ["Obrigado pela ajuda", "o corpo humano", "não quero falar com um atendente", "Já falei com alguém ontem"],
    "de": ["Wie spät ist es?", "der menschliche Körper", "Ich möchte nicht mit einem Menschen sprechen",
           "Ich habe gestern mit einem Mitarbeiter gesprochen",
           "Kann ich das mit einem Freund sprechen?"],
    "ja": ["人間の体について教えて", "昨日オペレーターと話しました", "人間と話したくない", "営業時間は？"],
    "hi": ["मैंने कल एजेंट से बात की थी", "मानव शरीर में कितनी हड्डियाँ हैं?", "मुझे इंसान से बात नहीं करनी",
           "kal agent se baat ki thi"],
    "id": ["Jam buka toko kapan?", "tubuh manusia", "tidak perlu bicara dengan CS",
           "kemarin saya sudah bicara dengan CS"],
    "tr": ["insan vücudu", "Dün temsilciyle konuştum", "insanla konuşmak istemiyorum", "Kargom nerede?"],
    "it": ["Grazie mille", "non voglio parlare con un operatore"],
    "nl": ["Hoe laat gaan jullie open?"],
}

UN_AND_MORE = {"ar", "zh", "en", "fr", "ru", "es", "pt", "de", "ja", "hi", "id", "tr"}


def _table(table: dict[str, list[str]]) -> list:
    return [pytest.param(text, id=f"{lang}-{i}") for lang, texts in table.items() for i, text in enumerate(texts)]


@pytest.mark.parametrize("text", _table(REQUESTS))
def test_explicit_requests_are_detected(text):
    assert explicit.is_explicit_request(text)


@pytest.mark.parametrize("text", _table(NEAR_MISSES))
def test_near_misses_stay_with_the_ai(text):
    assert not explicit.is_explicit_request(text)


def test_every_language_promised_has_phrasings_and_near_misses_and_a_table_entry():
    assert UN_AND_MORE <= set(explicit.LANGUAGES)
    for lang in UN_AND_MORE:
        assert len(REQUESTS[lang]) >= 5 and len(NEAR_MISSES[lang]) >= 2, lang


@pytest.mark.parametrize(("raw", "folded"), [
    ("Ich MÖCHTE", "ich mochte"),  # Latin accents dropped, case folded
    ("İnsanla konuşmak", "insanla konusmak"),  # Turkish İ and ı, ş
    ("ｵﾍﾟﾚｰﾀｰ", "オペレーター"),  # NFKC: half-width katakana
    ("أُريدُ التَّحدُّثَ", "اريد التحدث"),  # Arabic harakat, one alef
    ("ёлка", "елка"),
    ("बात करनी", "बात करनी"),  # Devanagari vowel signs are letters: kept
    ("I’d like", "i'd like"),
])
def test_fold(raw, folded):
    assert explicit.fold(raw) == folded
