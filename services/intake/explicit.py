"""Explicit requests for a person, detected before any model: one table of patterns per
language and one matcher over the text folded once."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Decided: an explicit request is a visitor asking now to be put in touch with a person: a
# verb of talking / connecting / transferring (in a present, wanting or asking form) with a
# word for a person, or a word for a person as the whole message ("agent", "オペレーター").
# Talk about humans that asks for nothing ("the human body", "I talked to an agent
# yesterday", "人工智能") is not; neither is a request said with a negation right before it
# ("I don't want to talk to a human"). Ambiguous cases go to the model, whose tool decides.
#
# Every pattern is written in the folded form `fold` gives: casefolded, NFKC, diacritics
# stripped from Latin letters (people drop them: "falar com alguem", "konusmak"), Turkish
# dotless ı as i, Russian ё as е, Arabic without harakat and with one alef, ه for ة, ي for ى.
_LATIN_BASE = re.compile(r"[a-z]")
_FOLD_LETTERS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ة": "ه", "ى": "ي", "ـ": None,
                              "ı": "i", "ё": "е", "’": "'", "‘": "'", "ʼ": "'", "`": "'"})


def fold(text: str) -> str:
    """The form explicit requests are matched in (see above); applied once per message."""
    out: list[str] = []
    base = ""
    for c in unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold()):
        if unicodedata.combining(c):
            # Latin accents and Arabic harakat go; Devanagari or Japanese marks are letters' parts.
            if _LATIN_BASE.match(base) or "\u064b" <= c <= "\u065f" or c == "\u0670":
                continue
        else:
            base = c
        out.append(c)
    return unicodedata.normalize("NFKC", "".join(out)).translate(_FOLD_LETTERS)


@dataclass(frozen=True)
class Language:
    asks: tuple[str, ...]  # a request for a person (regex over folded text)
    unless: str = ""  # a negation within the few words before a match cancels it


_PERSON_EN = r"(human|person|someone|somebody|agent|operator|representative|rep|staff|support team|real one|customer service|customer support)"
_AR_PERSON = r"(?:ل|ب|لل)?(?:ال)?(انسان|بشري|بشر|شخص|موظف|ممثل|مندوب|حد|احد|عامل|خدمه العملاء)"

LANGUAGES: dict[str, Language] = {
    "en": Language(asks=(
        rf"\b(talk|speak|chat|connect me|put me through|transfer me|get me through)\b.{{0,30}}\b{_PERSON_EN}\b",
        r"\b(real|live|actual)\s+(person|human|agent|people)\b",
        r"\b(human|live) (agent|support|being|operator)\b",
        r"^\W*(a )?(human|agent|operator|representative|person)( please| pls| now)?\W*$",
        r"\b(i want|i need|i'd like|id like|can i get|can i have|give me|get me)\b.{0,20}\b(human|person|agent|operator|representative)\b",
    ), unless=r"\b(don't|dont|do not|doesn't|does not|didn't|did not|no need to|never|rather not)\b"),
    "de": Language(asks=(
        r"\b(mit )?(einem|einer|nem|ner|dem)( echten| richtigen)? (menschen|mitarbeiter|mitarbeiterin|person|berater|beraterin|kundenservice|kundendienst)\b.{0,30}\b(sprechen|reden|chatten|verbinden|telefonieren)\b",
        r"\bmit jemandem\b.{0,30}\b(sprechen|reden|chatten|telefonieren)\b",
        r"\b(einen|eine|nen) (menschen|mitarbeiter|mitarbeiterin|berater|beraterin|person)\b.{0,20}\b(sprechen|haben)\b",
        r"\b(echten|echte|realen|richtigen) (menschen|mensch|person|mitarbeiter)\b",
        r"\b(verbinden sie mich|verbinde mich|stellen sie mich)\b.{0,30}\b(menschen|mitarbeiter|mitarbeiterin|berater|jemandem|kundendienst)\b",
        r"\b(mensch|mitarbeiter) bitte\b",
    ), unless=r"\b(nicht|kein|keinen|keine|nie)\b"),
    "fr": Language(asks=(
        r"\b(parler|discuter|passer|echanger)\b.{0,30}\b(humain|personne|conseiller|conseillere|agent|operateur|quelqu'un|quelqu un)\b",
        r"\b(vrai|vraie|une) (personne|humain)\b",
        r"\b(mettez-moi|mettre|me mettre|passez-moi|transferez-moi)\b.{0,25}\b(humain|conseiller|conseillere|agent|operateur|quelqu'un)\b",
        r"\b(je veux|je voudrais|j'aimerais|besoin d'|il me faut)\b.{0,15}\b(un humain|un conseiller|une conseillere|un agent|un operateur)\b",
    ), unless=r"\b(ne|n'|pas|jamais)\b|\bn'"),
    "es": Language(asks=(
        r"\b(hablar|chatear|comunicarme|contactar|platicar)\b.{0,30}\b(humano|persona|agente|asesor|asesora|operador|operadora|alguien|ejecutivo)\b",
        r"\b(persona|humano|agente) real\b",
        r"\b(pasame|paseme|comuniqueme|comunicame|conecteme|conectame|transfiereme|transfierame)\b.{0,25}\b(humano|persona|agente|asesor|operador|alguien)\b",
        r"\b(quiero|necesito|quisiera)\b.{0,15}\b(un humano|una persona|un agente|un asesor|un operador)\b",
    ), unless=r"\b(no|nunca|tampoco)\b"),
    "pt": Language(asks=(
        r"\b(falar|conversar)\b.{0,30}\b(humano|pessoa|atendente|agente|alguem|operador)\b",
        r"\b(pessoa|atendente) (real|de verdade)\b",
        r"\b(me passa|me passe|me transfere|me transfira|transferir)\b.{0,30}\b(atendente|humano|pessoa|agente)\b",
        r"\batendimento humano\b",
        r"\b(quero|preciso de|gostaria de)\b.{0,10}\b(um humano|um atendente|uma atendente|uma pessoa|um agente)\b",
    ), unless=r"\b(nao|nunca)\b"),
    "it": Language(asks=(
        r"\b(parlare|chattare)\b.{0,30}\b(umano|persona|operatore|operatrice|agente|qualcuno)\b",
        r"\b(persona|operatore) (vera|reale|umano)\b",
    ), unless=r"\b(non|mai)\b"),
    "nl": Language(asks=(
        r"\b(praten|spreken|chatten)\b.{0,30}\b(mens|persoon|medewerker|medewerkster|iemand)\b",
        r"\b(een|echte|echt) (mens|persoon|medewerker)\b.{0,30}\b(spreken|praten)\b",
        r"\b(echte|echt) (mens|persoon|medewerker)\b",
    ), unless=r"\b(niet|geen|nooit)\b"),
    "ru": Language(asks=(
        r"\b(поговорить|говорить|пообщаться|связаться|общаться)\b.{0,30}\b(человек|оператор|менеджер|специалист|сотрудник|консультант|живым)",
        r"\b(соедините|соедини|переключите|переключи|позовите|позови|подключите|переведите|переведи|дайте|дай)\b.{0,20}\b(человек|оператор|менеджер|специалист|сотрудник|консультант)",
        r"\bживо(й|го|м|му)\b.{0,3}\b(человек|оператор)",
        r"^\W*(оператор|оператора|человека|менеджер|менеджера)( пожалуйста)?\W*$",
    ), unless=r"\b(не|нет|никогда)\b"),
    "ar": Language(asks=(
        r"\b(اتحدث|التحدث|نتحدث|تحدث|اتكلم|التكلم|نتكلم|اكلم|نكلم|كلمني|اتواصل|التواصل|نتواصل|تواصلني|حولني|حوليني|حولوني|وصلني|اوصلني|وصلوني|تحويلي)\b.{0,30}?\b" + _AR_PERSON + r"\b",
        r"\b(شخص|موظف|انسان|ممثل) حقيقي\b",
        r"\b(اريد|ابغي|ابي|عايز|عاوز|بدي|ممكن)\b.{0,10}?\b(انسان|موظف|ممثل|موظف خدمه العملاء|شخص حقيقي)\b",
    ), unless=r"\b(لا|ما|مش|لن|لم|مو)\b"),
    "zh": Language(asks=(
        r"转人工|轉人工|人工客服|人工服务|人工服務|真人客服|人工坐席",
        r"(要|找|叫|接|换|換|转|轉|联系|聯繫|聯系|请|請)(一个|一個|一位)?(人工|真人|客服)(?!智能)",
        r"(和|跟|与|與|同)(真人|人工|客服|工作人员|工作人員)(说话|說話|聊(?!过|過|了)|沟通|溝通|对话|對話|谈|談)",
        r"^\W*(人工|真人)(客服)?(吗|嗎)?\W*$",
    ), unless=r"不|别|別|没|沒"),
    "ja": Language(asks=(
        r"(人間|オペレーター|オペレータ|担当者|担当の(方|人)|スタッフ|係の(方|人)|係員|有人)(の方)?(と|に|へ|で)?(話したい|話せ|話をしたい|話させて|はなしたい|はなせ|つないで|繋いで|繋げて|つなげて|代わって|かわって|替わって|変わって|対応(を|して|お願い|希望))",
        r"人(と|に)(話したい|話せ|話をしたい|はなしたい|はなせ|つないで|繋いで|代わって|かわって)",
        r"(オペレーター|担当者|人間|スタッフ)(を|に|で)?(お願い|希望|呼んで|よんで)",
        r"^\W*(オペレーター|担当者|人間)(さん)?\W*$",
    )),
    "hi": Language(asks=(
        r"(इंसान|इन्सान|मनुष्य|व्यक्ति|आदमी|एजेंट|एजेन्ट|कर्मचारी|प्रतिनिधि|ऑपरेटर|कस्टमर केयर|कस्टमर सपोर्ट|किसी)\s*से\s*बात\s*(करनी|करना|कर सक|करा|करवा|करूँ|करूं|चाहिए|चाहता|चाहती)",
        r"(असली|वास्तविक|जीवित) (इंसान|इन्सान|व्यक्ति|आदमी|एजेंट)",
        r"\b(insaan|insan|human|agent|banda|bande|kisi|customer care|operator|aadmi)\s+se\s+baat\s+(karni|karna|kar sakta|kar sakti|karao|karwao|karwa do|kara do|karwaiye|karaiye|krni|krna|krao|krwao)\b",
    )),
    "id": Language(asks=(
        r"\b(bicara|berbicara|ngobrol|ngomong|terhubung|hubungkan|sambungkan|disambungkan|dihubungkan|sambungin|hubungin|dialihkan|alihkan)\b.{0,25}\b(manusia|orang asli|agen|agent|operator|petugas|staf|staff|cs|customer service|admin|karyawan)\b",
        r"\bminta\b.{0,15}\b(cs|admin|operator|agen|petugas|manusia)\b",
        r"\b(orang|manusia) (asli|beneran)\b",
    ), unless=r"\b(tidak|tak|gak|ga|nggak|enggak|ngga|jangan|sudah|udah|tadi|kemarin)\b"),
    "tr": Language(asks=(
        # Turkish negates in the verb ("istemiyorum"): the lookahead keeps "… istemiyorum" out.
        r"\b(insan|kisi|temsilci|musteri temsilcisi|yetkili|operator|personel|calisan|biri|birisi|canli destek)\w*\b.{0,15}\b(konusmak|konusabilir|konusayim|gorusmek|gorusebilir|gorusayim|baglar|baglayin|baglayabilir|baglayiniz|aktar|aktarin|aktarir|aktarabilir)\w*(?! istemiyorum| istemem)",
        r"\b(gercek|canli) (bir )?(insan|kisi|temsilci|destek)\b",
        r"^\W*(temsilci|yetkili|operator|canli destek)( lutfen)?\W*$",
    )),
}
_COMPILED = [(re.compile(p), re.compile(lang.unless) if lang.unless else None)
             for lang in LANGUAGES.values() for p in lang.asks]
_NEGATION_WINDOW = 25  # characters before a match looked at for a negation


def is_explicit_request(text: str) -> bool:
    """Whether the visitor explicitly asks for a person (checked before any model)."""
    folded = fold(text)
    for ask, unless in _COMPILED:
        for match in ask.finditer(folded):
            if unless is None or not unless.search(folded[max(0, match.start() - _NEGATION_WINDOW):match.start()]):
                return True
    return False
