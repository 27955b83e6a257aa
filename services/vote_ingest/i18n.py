"""Every string the voter sees, in both languages, in one place.

The pages are Chinese by default, English with `?lang=en` (`shared.lang`), remembered in
the `lang` cookie. Placeholders use `{name}`: Python fills
them with `str.format`, the page script with a plain replace, so the same text serves
both. The keys in `JS_KEYS` are embedded into the voting page for its script.
"""

from __future__ import annotations

from typing import Final

from shared.lang import Lang

# Zones where the voter's own name for the clock is "Beijing time": the daily-limit message
# must say which clock "come back after 00:00" refers to, in words the voter uses.
BEIJING_ZONES: Final[frozenset[str]] = frozenset(
    {"Asia/Shanghai", "Asia/Chongqing", "Asia/Harbin", "Asia/Urumqi", "PRC"}
)

STRINGS: Final[dict[Lang, dict[str, str]]] = {
    "zh": {
        "site_name": "网络评议",
        "site_tagline": "请为区改革项目的成效作出评价",
        "switch_label": "English",
        "switch_lang": "en",
        "polls_heading": "评议项目",
        "no_polls": "目前没有评议项目。",
        "state_open": "投票中",
        "state_upcoming": "未开始",
        "state_closed": "已结束",
        "opens_at": "开始时间：{time}（{zone}）",
        "closes_at": "截止时间：{time}（{zone}）",
        "closed_at": "已于 {time}（{zone}）结束",
        "go_vote": "去投票",
        "view_poll": "查看",
        "beijing_time": "北京时间",
        "rate_heading": "您的评价",
        "rate_legend": "请选择一项评价",
        "daily_rule_one": "每人每天可投 1 票。",
        "daily_rule": "每人每天可投 {limit} 票。",
        "captcha_label": "验证码",
        "captcha_hint": (
            "请输入图片中的字符，不区分大小写。看不清可点“听语音”（用英语读出字母和数字）"
        ),
        "captcha_alt": "验证码图片",
        "captcha_refresh": "换一张",
        "captcha_listen": "听语音",
        "captcha_listen_failed": "语音没有播放出来，请再点一次“听语音”，或点“换一张”。",
        "captcha_loading": "正在加载验证码…",
        "captcha_failed": "验证码加载失败，请点“换一张”重试。",
        "captcha_renewed": "验证码已过期，已为您换了一张新的，请重新输入。",
        "submit": "提交投票",
        "submitting": "正在提交…",
        "noscript": "投票需要启用浏览器的 JavaScript。项目介绍可直接阅读。",
        "countdown_close": "距投票截止还有",
        "countdown_open": "距投票开始还有",
        "countdown_days": "{n} 天",
        "countdown_done": "时间已到，正在刷新…",
        "countdown_done_wait": "时间已到。",
        "countdown_reload": "刷新页面",
        "upcoming_title": "投票尚未开始",
        "upcoming_body": "投票将于 {time}（{zone}）开始，届时欢迎回来评价。",
        "closed_title": "投票已结束",
        "closed_body": "本次评议已于 {time}（{zone}）结束，感谢您的关注与参与。",
        "results_heading": "投票结果",
        "results_live": "实时结果",
        "results_final": "最终结果",
        "results_hidden": "投票结果将在投票结束后公布。",
        "results_total_one": "共 {n} 票",
        "results_total_other": "共 {n} 票",
        "results_as_of": "更新于 {time}（{zone}）",
        "results_votes_one": "{n} 票",
        "results_votes_other": "{n} 票",
        "results_unavailable": "暂时无法获取结果，稍后会自动重试。",
        "results_nojs": "查看实时结果需要启用 JavaScript。",
        "need_choice": "请先选择一项评价（优、良、中或差）。",
        "need_captcha": "请输入验证码。",
        "pending": "已提交，正在确认您的投票…",
        "accepted_title": "投票成功",
        "accepted_body": "感谢您的评价！",
        "voted_today_title": "今天已投票",
        "vote_id": "投票编号：{id}",
        "vote_day": "投票日：{day}",
        "next_vote": "{time}（{zone}）之后可以再次投票。",
        "last_day": "今天是最后一个投票日，投票将于 {time}（{zone}）截止。",
        "rejected_title": "投票未成功",
        "reason_daily_limit": "您今天已经投过票了，请在 {time}（{zone}）之后再来投票。",
        "reason_daily_limit_last": (
            "您今天已经投过票了。今天是最后一个投票日，投票将于 {time}（{zone}）截止，"
            "感谢您的参与。"
        ),
        "reason_captcha_wrong": "验证码不正确。已为您换了一张新的验证码，请重新输入后再次提交。",
        "reason_captcha_expired": (
            "验证码已过期（有效期 5 分钟）。已为您换了一张新的验证码，请重新输入后再次提交。"
        ),
        "reason_captcha_reused": (
            "这张验证码已经用过了。已为您换了一张新的验证码，请重新输入后再次提交。"
        ),
        "reason_rate_limited": "提交过于频繁，请稍等一分钟后再试。",
        "reason_poll_closed": "投票已结束，本次投票未被计入。感谢您的关注。",
        "reason_poll_not_open": "投票尚未开始，请在开始后再来。",
        "reason_unknown_poll": "找不到这个评议项目，请返回首页重新进入。",
        "reason_invalid_choice": "所选的评价无效，请重新选择后提交。",
        "reason_other": "投票未被接受（{reason}）。请刷新页面后重试。",
        "still_pending": (
            "投票已提交，仍在处理中（编号 {id}）。请稍后点“再次查询”确认结果，无需重复投票。"
        ),
        "check_again": "再次查询",
        "error_busy": "系统繁忙，本次投票没有被记录。请稍等片刻后重新提交。",
        "error_network": "网络连接失败，投票没有提交成功。请检查网络后重试。",
        "error_invalid": "提交的内容有误：{detail}",
        "error_session": "无法建立投票身份，请刷新页面后重试。",
        "lottery_heading": "参加抽奖",
        "lottery_rules": (
            "投票结束后将公开抽取 {prizes} 名幸运者，每人获得一份“{prize}”。"
            "每投票一天，中奖机会增加一份。报名一次即可，之后每天投票都会自动计入。"
        ),
        "lottery_heading_closed": "抽奖",
        "lottery_rules_closed": (
            "投票结束后，在报名者中公开抽取 {prizes} 名幸运者，每人获得一份“{prize}”；"
            "每投票一天，中奖机会增加一份。"
        ),
        "lottery_name": "姓名",
        "lottery_phone": "手机号码",
        "lottery_phone_hint": "11 位中国大陆手机号，仅用于通知中奖和寄送奖品",
        "lottery_submit": "报名抽奖",
        "lottery_saving": "正在报名…",
        "lottery_entered": "已报名：{phone}",
        "lottery_change": "修改姓名或手机号",
        "lottery_update": "保存修改",
        "lottery_days": "已计入投票天数：{days} 天",
        "lottery_days_pending": "投票成功后，天数会在片刻后更新。",
        "lottery_invalid_phone": "手机号码格式不正确，请输入 11 位中国大陆手机号。",
        "lottery_need_name": "请填写姓名。",
        "lottery_invalid_name": "姓名中有不能使用的字符（如表情符号或不可见字符），请只填写文字。",
        "lottery_closed": "投票已结束，抽奖报名已截止。",
        "lottery_failed": "报名没有成功，请稍后重试。",
        "lottery_awaiting": "投票已结束，抽奖将公开进行，中奖名单公布后会显示在这里。",
        "lottery_drawn": "抽奖已于 {time}（{zone}）公开完成。",
        "lottery_winners": "中奖名单：",
        "lottery_winner": "{name}　{phone}",
        "lottery_no_winners": (
            "本次抽奖没有符合条件的报名者（报名并至少投票一天），没有产生中奖者。"
        ),
        "lottery_you_won": "恭喜，您中奖了！工作人员会通过您报名的手机号与您联系。",
        "lottery_audit": "抽奖核验记录（任何人都可据此复算）",
        "not_found_title": "找不到这个评议项目",
        "not_found_body": "链接可能有误，或项目已下线。",
        "back_home": "返回首页",
        "back_list": "全部评议项目",
    },
    "en": {
        "site_name": "Public review",
        "site_tagline": "Rate the results of the district's reform projects",
        "switch_label": "中文",
        "switch_lang": "zh",
        "polls_heading": "Projects for review",
        "no_polls": "There are no projects under review right now.",
        "state_open": "Open",
        "state_upcoming": "Not yet open",
        "state_closed": "Closed",
        "opens_at": "Opens {time} ({zone})",
        "closes_at": "Closes {time} ({zone})",
        "closed_at": "Closed {time} ({zone})",
        "go_vote": "Vote",
        "view_poll": "View",
        "beijing_time": "Beijing time",
        "rate_heading": "Your rating",
        "rate_legend": "Choose one rating",
        "daily_rule_one": "Each person may vote once a day.",
        "daily_rule": "Each person may vote {limit} times a day.",
        "captcha_label": "Verification code",
        "captcha_hint": (
            "Type the characters in the picture; upper or lower case both work."
            " “Listen” reads them out (letters and digits, in English)"
        ),
        "captcha_alt": "Verification code picture",
        "captcha_refresh": "New code",
        "captcha_listen": "Listen",
        "captcha_listen_failed": "The code did not play. Tap “Listen” again, or “New code”.",
        "captcha_loading": "Loading the verification code…",
        "captcha_failed": "The verification code did not load. Tap “New code” to try again.",
        "captcha_renewed": "The verification code expired. Here is a new one: please type it.",
        "submit": "Submit vote",
        "submitting": "Submitting…",
        "noscript": "Voting needs JavaScript enabled in the browser. The project text is below.",
        "countdown_close": "Voting closes in",
        "countdown_open": "Voting opens in",
        "countdown_days": "{n} d",
        "countdown_done": "Time is up, refreshing…",
        "countdown_done_wait": "Time is up.",
        "countdown_reload": "Reload the page",
        "upcoming_title": "Voting has not started yet",
        "upcoming_body": "Voting opens on {time} ({zone}). Please come back then.",
        "closed_title": "Voting has closed",
        "closed_body": "This review closed on {time} ({zone}). Thank you for your interest.",
        "results_heading": "Results",
        "results_live": "Live results",
        "results_final": "Final results",
        "results_hidden": "Results will be published when voting closes.",
        "results_total_one": "{n} vote in total",
        "results_total_other": "{n} votes in total",
        "results_as_of": "Updated {time} ({zone})",
        "results_votes_one": "{n} vote",
        "results_votes_other": "{n} votes",
        "results_unavailable": "Results are unavailable right now; retrying shortly.",
        "results_nojs": "Live results need JavaScript enabled.",
        "need_choice": "Please choose a rating first (Excellent, Good, Fair or Poor).",
        "need_captcha": "Please type the verification code.",
        "pending": "Submitted. Confirming your vote…",
        "accepted_title": "Vote recorded",
        "accepted_body": "Thank you for your rating!",
        "voted_today_title": "You have voted today",
        "vote_id": "Vote id: {id}",
        "vote_day": "Voting day: {day}",
        "next_vote": "You can vote again after {time} ({zone}).",
        "last_day": "Today is the last voting day: voting closes at {time} ({zone}).",
        "rejected_title": "Vote not recorded",
        "reason_daily_limit": (
            "You have already voted today. Please come back after {time} ({zone})."
        ),
        "reason_daily_limit_last": (
            "You have already voted today. Today is the last voting day: voting closes at "
            "{time} ({zone}). Thank you for taking part."
        ),
        "reason_captcha_wrong": (
            "The verification code was wrong. A new code has been loaded: "
            "please type it and submit again."
        ),
        "reason_captcha_expired": (
            "The verification code expired (codes last 5 minutes). A new code has been loaded: "
            "please type it and submit again."
        ),
        "reason_captcha_reused": (
            "That verification code was already used. A new code has been loaded: "
            "please type it and submit again."
        ),
        "reason_rate_limited": "Too many attempts in a short time. Please wait a minute and retry.",
        "reason_poll_closed": "Voting has closed, so this vote was not counted. Thank you.",
        "reason_poll_not_open": "Voting has not started yet. Please come back when it opens.",
        "reason_unknown_poll": "This project could not be found. Please start again from the list.",
        "reason_invalid_choice": "That rating is not valid. Please choose again and submit.",
        "reason_other": "The vote was not accepted ({reason}). Please reload the page and retry.",
        "still_pending": (
            "Your vote was submitted and is still being processed (id {id}). "
            "Tap “Check again” in a moment; there is no need to vote again."
        ),
        "check_again": "Check again",
        "error_busy": (
            "The system is busy and nothing was recorded. Please wait a moment and retry."
        ),
        "error_network": (
            "Network error: the vote was not submitted. Check the connection and retry."
        ),
        "error_invalid": "The submission was not valid: {detail}",
        "error_session": "Could not start a voting session. Please reload the page and retry.",
        "lottery_heading": "Prize draw",
        "lottery_rules": (
            "When voting closes, {prizes} winners will be drawn in public; each receives "
            "one “{prize}”. Every day you vote adds one more chance. Enter once: each later "
            "day you vote is counted automatically."
        ),
        "lottery_heading_closed": "Prize draw",
        "lottery_rules_closed": (
            "After the close, {prizes} winners are drawn in public among those who entered; "
            "each receives one “{prize}”, and every day a person voted counts as one more "
            "chance."
        ),
        "lottery_name": "Name",
        "lottery_phone": "Mobile number",
        "lottery_phone_hint": (
            "11-digit mainland China mobile number, used only to notify winners and deliver prizes"
        ),
        "lottery_submit": "Enter the draw",
        "lottery_saving": "Entering…",
        "lottery_entered": "Entered: {phone}",
        "lottery_change": "Change name or number",
        "lottery_update": "Save changes",
        "lottery_days": "Days counted so far: {days}",
        "lottery_days_pending": "After a vote is recorded, the day count updates shortly.",
        "lottery_invalid_phone": (
            "That is not a valid mobile number: please enter an 11-digit mainland China number."
        ),
        "lottery_need_name": "Please enter your name.",
        "lottery_invalid_name": (
            "The name has a character that cannot be used (such as an emoji or an invisible "
            "character). Please use letters only."
        ),
        "lottery_closed": "Voting has closed, so the draw no longer takes entries.",
        "lottery_failed": "The entry did not go through. Please retry later.",
        "lottery_awaiting": (
            "Voting has closed. The draw is made in public; the winners will be shown here."
        ),
        "lottery_drawn": "The draw was made on {time} ({zone}).",
        "lottery_winners": "Winners:",
        "lottery_winner": "{name}, {phone}",
        "lottery_no_winners": (
            "No entry qualified (entered and voted on at least one day), so nobody won."
        ),
        "lottery_you_won": (
            "Congratulations, you won! Staff will contact you on the number you entered."
        ),
        "lottery_audit": "The draw's audit record (anyone can recompute the draw from it)",
        "not_found_title": "Project not found",
        "not_found_body": "The link may be wrong, or the project is no longer online.",
        "back_home": "Back to the list",
        "back_list": "All projects",
    },
}

# What the page script needs: outcome messages and the live parts of the page. The rest is
# rendered on the server, so the page reads the same before the script runs.
JS_KEYS: Final[tuple[str, ...]] = (
    "captcha_alt",
    "captcha_loading",
    "captcha_failed",
    "captcha_renewed",
    "captcha_listen_failed",
    "submit",
    "submitting",
    "countdown_days",
    "countdown_done",
    "countdown_done_wait",
    "countdown_reload",
    # Counted nouns come in the language's plural forms (Intl.PluralRules: "one", "other").
    "results_total_one",
    "results_total_other",
    "results_as_of",
    "results_votes_one",
    "results_votes_other",
    "results_hidden",
    "results_unavailable",
    "results_live",
    "results_final",
    "need_choice",
    "need_captcha",
    "pending",
    "accepted_title",
    "accepted_body",
    "voted_today_title",
    "vote_id",
    "vote_day",
    "next_vote",
    "last_day",
    "rejected_title",
    "reason_daily_limit",
    "reason_daily_limit_last",
    "reason_captcha_wrong",
    "reason_captcha_expired",
    "reason_captcha_reused",
    "reason_rate_limited",
    "reason_poll_closed",
    "reason_poll_not_open",
    "reason_unknown_poll",
    "reason_invalid_choice",
    "reason_other",
    "still_pending",
    "check_again",
    "error_busy",
    "error_network",
    "error_invalid",
    "error_session",
    "lottery_submit",
    "lottery_saving",
    "lottery_entered",
    "lottery_change",
    "lottery_update",
    "lottery_days",
    "lottery_days_pending",
    "lottery_invalid_phone",
    "lottery_need_name",
    "lottery_invalid_name",
    "lottery_closed",
    "lottery_failed",
    "lottery_awaiting",
    "lottery_drawn",
    "lottery_winners",
    "lottery_winner",
    "lottery_no_winners",
    "lottery_you_won",
    "lottery_audit",
)


def text(lang: Lang, key: str, **values: object) -> str:
    template = STRINGS[lang][key]
    return template.format(**values) if values else template


def zone_name(lang: Lang, timezone: str) -> str:
    """How the voter names the poll's clock: "北京时间" rather than "Asia/Shanghai"."""
    return text(lang, "beijing_time") if timezone in BEIJING_ZONES else timezone


def js_strings(lang: Lang) -> dict[str, str]:
    return {key: STRINGS[lang][key] for key in JS_KEYS}
