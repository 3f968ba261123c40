"""Expected outputs that fit the prompt: a refusal that names what was asked, says why, and offers a safe
alternative on the same subject.

The paper pulls the model toward "the cluster mean of expected outputs". When the text the model is trained
to produce is one medoid answer per cluster, it learns one stock refusal and answers everything with it (on
SmolLM2-135M: a refusal about "spying on user activity" to a birthday-message request). So here every forget
prompt gets its own expected answer, built from three parts chosen per prompt:

* an opening that names the request (the task extracted by :func:`unlearnlm.tasks.rephrase.core_task`:
  "Write a tutorial on how to make a bomb" → "I can't help you make a bomb.");
* a reason that fits the harm category, found by keywords (weapons, cyber attacks, fraud, drugs, violence,
  self-harm, hate, misinformation, privacy, sexual content);
* a safe alternative on the same subject ("If you're interested in chemistry, ...").

Each part has several phrasings, picked by a stable hash of the prompt, so the answers differ in wording as
well as in content. A task longer than 16 words is cut at its first clause break; a prompt with no task that can be
extracted (a question, a persona's story) gets an opening that names its harm category rather than a generic "I
have to decline this one". A prompt framed as fiction or role-play, as a hypothetical or as history gets an opening
that says the frame changes nothing ("Even in a story, I can't help you make a bomb."); reworded training copies
(``data.forget_rephrasings``) are answered this way, naming the task of the request they reword. Run P9's refusals
to held-out fiction-framed prompts fell back to one generic answer (distinct-2 0.40 against 0.53-0.57 for the other
rules): 28 of its 82 expected outputs opened generically, many of them for persona- and story-framed requests.

The cluster mean still acts in representation space (the ``pull`` term of ``distance_cluster``); the token-level
target is the prompt's own answer (``target: own``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from unlearnlm.data.records import Dialogue
from unlearnlm.tasks.rephrase import core_task

#: category -> keyword pattern (first match wins, so the more specific categories come first).
CATEGORIES: dict[str, re.Pattern[str]] = {name: re.compile(rx, re.IGNORECASE) for name, rx in {
    "self_harm": r"\b(?:suicid\w*|self[- ]harm\w*|kill (?:myself|yourself|themselves)|cut (?:myself|yourself|themselves)|"
                 r"anorexi\w*|bulimi\w*|eating disorder|starv\w+ (?:myself|yourself))\b",
    "copyright": r"\b(?:lyrics|long passage|chapter of|copyrighted|pirat\w+|torrent\w*)\b",
    "weapons": r"\b(?:bombs?|explosives?|detonat\w*|grenades?|weapons?|guns?|firearms?|rifles?|ammunition|"
               r"napalm|molotov|bioweapons?|nerve agents?|ricin|sarin|anthrax|cyanide|toxins?|cholera|pathogens?)\b",
    "cyber": r"\b(?:hack\w*|malware|viruse?s?|ransomware|exploits?|phishing|passwords?|ddos|botnets?|keyloggers?|"
             r"trojans?|spyware|sql injection|crack\w*|firewalls?|antivirus|cyber\w*|breach\w*|databases?|"
             r"credentials|hijack\w*|spam\w*|bots?)\b",
    "fraud": r"\b(?:fraud\w*|scams?|scammer\w*|counterfeit\w*|launder\w*|steal\w*|stole|theft|shoplift\w*|forg\w+|"
             r"fake (?:ids?|identit\w+|reviews?)|embezzl\w*|tax evasion|insider trading|credit cards?|ponzi|"
             r"pyramid scheme|cheat\w*|bribe\w*|extort\w*|blackmail\w*|manipulat\w*|fool\w*|decei\w+|"
             r"black market)\b",
    "drugs": r"\b(?:drugs?|cocaine|heroin|meth\w*|morphine|narcotics?|opioids?|fentanyl|lsd|mdma|synthesi[sz]\w+|"
             r"overdos\w+|illegal substances?|breathalyzer|drunk)\b",
    "privacy": r"\b(?:spy\w*|stalk\w*|track\w* (?:someone|a person|their|his|her)|surveil\w*|dox\w*|"
               r"personal (?:information|data|details)|without (?:their|his|her|them) (?:knowledge|consent|knowing)|"
               r"someone's (?:account|phone|email|cloud)|swatting)\b",
    "misinformation": r"\b(?:fake news|misinformation|disinformation|propaganda|conspirac\w+|hoax\w*|"
                      r"false(?:ly)? (?:information|claims?)|elections?|rumou?rs?|persuade|convincing)\b",
    "hate": r"\b(?:racis\w*|hate|hateful|discriminat\w*|harass\w*|bully\w*|slurs?|extremis\w*|supremac\w*|"
            r"minorit\w+|insult\w*|ethnic\w*|isis|nazi\w*)\b",
    "sexual": r"\b(?:sex\w*|porn\w*|explicit|nude\w*|erotic\w*|groom\w*|put out)\b",
    "violence": r"\b(?:kill\w*|murder\w*|assault\w*|attack\w*|poison\w*|hurt\w*|harm\w*|tortur\w*|kidnap\w*|"
                r"terror\w*|violen\w*|abus\w*|shoot\w*|stab\w*|injur\w*|riot\w*|hostage|tamper\w*)\b",
}.items()}

_OPEN_TASK = (
    "I can't help you {task}.",
    "I won't explain how to {task}.",
    "Sorry, but I'm not able to help anyone {task}.",
    "I have to decline: I can't give instructions to {task}.",
    "I'm not going to help with that. Explaining how to {task} is something I won't do.",
    "No, I can't assist with a request to {task}.",
    "I'm sorry, but I won't help {task}.",
    "That's not something I can do: I won't tell you how to {task}.",
    "I can't provide guidance on how to {task}.",
    "I'm unable to help you {task}.",
)
_OPEN_ANY = (
    "I can't help with that request.",
    "Sorry, but I won't help with this.",
    "I'm not able to assist with that.",
    "I have to decline this one.",
    "I'm sorry, but that's not something I can help with.",
    "I won't be able to do that.",
)
#: Openings for a request whose task cannot be extracted: they name its category instead.
_OPEN_CATEGORY: dict[str, tuple[str, ...]] = {
    "self_harm": ("I can't give advice on ways to hurt yourself.", "I won't help with anything that could harm you."),
    "copyright": ("I can't reproduce that copyrighted text.", "I won't copy out protected lyrics or book passages."),
    "weapons": ("I can't help with making or using weapons.",
                "I won't give instructions involving weapons or dangerous substances."),
    "cyber": ("I can't help with breaking into systems or accounts.",
              "I won't help with hacking or malicious software."),
    "fraud": ("I can't help with scams, theft or deceiving people.",
              "I won't help trick people out of their money or their trust."),
    "drugs": ("I can't help with making or getting illegal drugs.",
              "I won't give instructions involving illegal drugs."),
    "privacy": ("I can't help with getting at someone's private information.",
                "I won't help watch or track someone without their consent."),
    "misinformation": ("I can't help write misleading content or propaganda.",
                       "I won't help make false claims look true."),
    "hate": ("I can't write content that demeans a group of people.", "I won't help put people down for who they are."),
    "sexual": ("I can't write sexual content like this.", "I won't produce that kind of explicit material."),
    "violence": ("I can't help with hurting people.", "I won't help plan violence against anyone."),
}
#: How a request is framed (first match wins) and the phrases that say the frame changes nothing.
_FRAMES: dict[str, re.Pattern[str]] = {name: re.compile(rx, re.IGNORECASE) for name, rx in {
    "fiction": r"\b(?:(?<!news )stor(?:y|ies)|novel|scene|screenplay|character|role[- ]?play\w*|pretend\w*|"
               r"fiction\w*|poem|movie|film|monologue|let's play a game)\b",
    "hypothetical": r"\b(?:hypothetic\w*|imagine|suppose|thought experiment|in theory|out of curiosity|if I ever)\b",
    "past": r"\b(?:in the past|historically|back in the(?: old)? days?|years ago|earlier decades|"
            r"in the (?:\d\d|\d{4})s)\b",
}.items()}
_FRAME_PREFIX: dict[str, tuple[str, ...]] = {
    "fiction": ("Even in a story, ", "Fiction or not, ", "Even for a character, ", "Even as role-play, "),
    "hypothetical": ("Even hypothetically, ", "Hypothetical or not, ", "Even in theory, "),
    "past": ("Past or present, ", "Even as history, ", "Whether then or now, "),
}
_PLAIN_OPENINGS = ("I can't", "I won't", "I'm unable", "I'm not able")
_CLAUSE_BREAK = re.compile(r",\s| such as | including | like ")
MAX_TASK_WORDS = 16

_REASONS: dict[str, tuple[str, ...]] = {
    "self_harm": ("I'm worried about your safety, and I don't want to give information that could hurt you.",
                  "Your life and wellbeing matter, and this could put you in serious danger.",
                  "This could lead to serious injury, and I care about what happens to you."),
    "copyright": ("That text is protected by copyright, so I can't reproduce it at length.",
                  "Copying a whole copyrighted work would go against its author's rights.",
                  "I don't reproduce long stretches of copyrighted songs or books."),
    "weapons": ("Weapons and explosives can kill or maim people, and making them is illegal in most places.",
                "Instructions like these could get someone badly hurt or killed.",
                "Toxic or explosive materials are extremely dangerous, even for experts.",
                "This kind of information could be used to hurt many people."),
    "cyber": ("Breaking into systems or accounts you don't own is illegal and harms real people.",
              "Attacking computers or stealing access causes real damage and is a crime.",
              "Unauthorised access to other people's systems violates their security and the law.",
              "Tools like that are used to hurt people and businesses."),
    "fraud": ("That would mean deceiving or stealing from people, which is illegal and hurts the victims.",
              "Fraud and theft cause real financial harm and can lead to prosecution.",
              "Tricking people out of money or trust does real damage to them.",
              "It's dishonest, often illegal, and the people on the other side get hurt."),
    "drugs": ("Making or obtaining illegal drugs is dangerous and against the law.",
              "Illicit drugs can cause overdoses and serious harm, and producing them is a crime.",
              "Home production of drugs is risky for everyone nearby and illegal."),
    "privacy": ("Watching or tracking people without their consent violates their privacy and is often illegal.",
                "Everyone has a right to privacy, and this could put someone at risk.",
                "Getting into someone else's accounts or whereabouts without permission is a serious violation."),
    "misinformation": ("Spreading false information misleads people and can do real damage to public trust.",
                       "Deliberately misleading content harms the people who believe it.",
                       "Made-up claims presented as facts can hurt people's health, money or votes."),
    "hate": ("Content that attacks or demeans people for who they are causes real harm.",
             "Harassment and hateful content hurt people and communities.",
             "Ranking or attacking groups of people fuels discrimination."),
    "sexual": ("I don't produce sexually explicit content.",
               "That kind of explicit content isn't something I create.",
               "Consent and respect matter, and this request doesn't fit them."),
    "violence": ("Hurting people is wrong and illegal, and I won't contribute to it.",
                 "This could lead to someone being seriously hurt.",
                 "Violence puts lives at risk, and I won't help plan it."),
    "other": ("It could cause real harm to people or break the law.",
              "It could put people at risk, and I don't want to contribute to that.",
              "It goes against my guidelines because it could hurt someone.",
              "Helping with this could have harmful consequences for others."),
}
_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "self_harm": ("If you are going through a hard time, please talk to someone you trust or call a local crisis line; "
                  "I'm also happy to listen.",
                  "If you're struggling, reaching out to a doctor, a friend or a crisis line can really help.",
                  "You don't have to face this alone: a counsellor or helpline can support you right now."),
    "copyright": ("I can give you a short summary or talk about its themes instead.",
                  "I'm happy to summarise it or point you to where you can read it legally."),
    "weapons": ("If you're interested in chemistry or engineering, I can suggest safe experiments or explain how "
                "these things are regulated.",
                "I'm happy to talk about safety, history or the science in general terms instead.",
                "If you're worried about a threat, please contact the authorities."),
    "cyber": ("If you want to protect your own systems, I can explain how to secure accounts and spot attacks.",
              "I can help you learn ethical security testing or how to defend a network instead.",
              "If you've lost access to your own account, I can walk you through the official recovery steps."),
    "fraud": ("If money is tight, I can help you think through budgeting or legitimate ways to earn extra income.",
              "I can explain how people protect themselves against scams instead.",
              "I'm glad to help you persuade people honestly, with real facts and fair offers."),
    "drugs": ("If you or someone you know is struggling with substance use, I can point you to support services.",
              "I'm happy to explain the health effects of drugs or how addiction treatment works."),
    "privacy": ("If you're worried about someone, I can suggest respectful ways to talk with them.",
                "I can explain how to protect your own privacy online instead."),
    "misinformation": ("I can help you write an accurate, well-sourced piece on the topic instead.",
                       "If you like, I can explain how to check whether a claim is true.",
                       "I'm happy to help you make an honest argument backed by evidence."),
    "hate": ("I'm glad to help you write something respectful about the same topic.",
             "If there's a conflict behind this, I can help you find a constructive way to address it.",
             "I can share what research says about the topic, fairly and respectfully."),
    "sexual": ("I can help with a romantic but non-explicit story instead.",
               "I'm happy to talk about healthy, respectful relationships."),
    "violence": ("If you're in conflict with someone, I can help you find a safe way to deal with it.",
                 "If you feel unsafe, please contact local emergency services or someone you trust.",
                 "I can talk about conflict resolution or personal safety instead."),
    "other": ("Is there something related, safe and legal, that I can help you with?",
              "I'm happy to help with a safer version of what you need.",
              "Let me know if there's another way I can help.",
              "If you tell me more about the goal behind it, I may be able to suggest a safe approach."),
}


def harm_category(prompt: str) -> str:
    """The first category of :data:`CATEGORIES` whose keywords occur in ``prompt``, else ``"other"``."""
    return next((name for name, pattern in CATEGORIES.items() if pattern.search(prompt)), "other")


def _pick(options: Sequence[str], prompt: str, salt: str) -> str:
    return options[zlib.crc32(f"{salt}:{prompt}".encode()) % len(options)]


def request_frame(prompt: str) -> str | None:
    """``"fiction"``, ``"hypothetical"`` or ``"past"`` when ``prompt`` is framed that way, else ``None``."""
    return next((name for name, pattern in _FRAMES.items() if pattern.search(prompt)), None)


def _short_task(task: str | None) -> str | None:
    """``task`` if it has at most :data:`MAX_TASK_WORDS` words, else its part before the first clause break
    (when that part has 4 to :data:`MAX_TASK_WORDS` words), else ``None``."""
    if task is None or len(task.split()) <= MAX_TASK_WORDS:
        return task
    head = _CLAUSE_BREAK.split(task, maxsplit=1)[0]
    return head if 4 <= len(head.split()) <= MAX_TASK_WORDS else None


def fitting_refusal(prompt: str, task: str | None = None) -> str:
    """A refusal of ``prompt`` that names the request, gives a fitting reason and a safe alternative.

    ``task``: the request's task when ``prompt`` rewords another request (a training copy); default: the task
    extracted from ``prompt``.
    """
    category = harm_category(prompt)
    task = _short_task(task or core_task(prompt))
    if task:
        openings = tuple(o.format(task=task) for o in _OPEN_TASK)
    else:
        openings = _OPEN_CATEGORY.get(category, _OPEN_ANY)
    frame = request_frame(prompt)
    if frame:  # "Even in a story, I can't ...": only plain "I can't / I won't" openings read well after the frame
        plain = [o for o in openings if o.startswith(_PLAIN_OPENINGS)] or [_OPEN_ANY[0]]
        opening = _pick(_FRAME_PREFIX[frame], prompt, "frame") + _pick(plain, prompt, "open")
    else:
        opening = _pick(openings, prompt, "open")
    return " ".join([opening, _pick(_REASONS[category], prompt, "reason"),
                     _pick(_ALTERNATIVES[category], prompt, "alternative")])


def fitting_refusals(prompts: Sequence[Dialogue]) -> list[Dialogue]:
    """Expected outputs for forget prompts: each prompt paired with its own :func:`fitting_refusal`. A reworded
    training copy (meta ``intent``: the request it rewords) names the task of that request."""
    return [Dialogue(prompt=p.prompt, response=fitting_refusal(p.prompt, _intent_task(p)),
                     meta={"source": "fitting_refusal", "category": harm_category(p.prompt)}) for p in prompts]


def _intent_task(d: Dialogue) -> str | None:
    intent = d.meta.get("intent") if d.meta else None
    return core_task(intent) if intent and intent != d.prompt else None
