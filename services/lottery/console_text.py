"""Every string of the staff console, in both languages.

The console is Chinese by default, like the voting pages (the staff are the district's);
English with `?lang=en`, or when the voting pages' `lang` cookie says so (`shared.lang`).
The template shows them as they are; the console script reads its own from the page and
fills their `{name}` placeholders with a plain replace.
"""

from __future__ import annotations

from typing import Final

from shared.catalog import OPTION_LABELS
from shared.lang import LANGS, Lang

STRINGS: Final[dict[Lang, dict[str, str]]] = {
    "zh": {
        "title": "网络评议 · 工作人员控制台",
        "switch_label": "English",
        "switch_lang": "en",
        "refresh": "刷新",
        "sign_out": "退出登录",
        "sign_in": "登录",
        "token_label": "工作人员令牌",
        "token_hint": "令牌只保存在本浏览器标签页中，关闭标签页即清除。",
        "fact_state": "状态",
        "fact_page": "投票页面",
        "qr_show": "二维码（供推文、海报扫码投票）",
        "qr_alt": "“{title}”投票页面的二维码",
        "qr_download": "下载二维码（PNG）",
        "fact_voting": "投票时间",
        "fact_drawn": "开奖",
        "drawn_line": "{time}，由 {who} 抽取",
        "fact_prize": "奖品",
        "fact_entries": "报名",
        "fact_commitment": "承诺值",
        "prize_line": "{prizes} 份 {prize}，另设候补 {reserves} 名",
        "entries_line": "{entries} 人（其中 {eligible} 人至少投票 1 天）",
        "count_heading": "计票",
        "count_private": "本项目的计票结果在投票结束后才向公众公开；此处仅工作人员可见。",
        "col_option": "评价",
        "col_votes": "票数",
        "col_share": "占比",
        "count_total_one": "共 {n} 票",
        "count_total_other": "共 {n} 票",
        "count_live": "实时，更新于 {time}",
        "count_final": "最终结果",
        "count_unavailable": "暂时无法获取计票结果：{error}",
        "histogram_heading": "按投票天数统计的报名",
        "histogram_label": "{days} 天",
        "histogram_title": "{n} 人投票 {days} 天",
        "histogram_empty": "尚无报名。",
        "before_close": "投票结束后才能抽奖。",
        "draw_heading": "抽奖",
        "draw_once": "抽奖只进行一次，不可重抽。请输入评议项目编号以确认。",
        "entropy_label": "公开随机数（可选，例如投票结束后公布的收盘指数）",
        "confirm_label": "评议项目编号",
        "draw_button": "开始抽奖",
        "winners_heading": "中奖名单",
        "reserves_heading": "候补名单",
        "col_rank": "名次",
        "col_entry": "报名编号",
        "col_name": "姓名",
        "col_phone": "手机号",
        "csv_button": "下载中奖名单 CSV（完整信息）",
        "erase_heading": "删除报名者个人信息",
        "erase_explain": (
            "奖品发放完毕后，请删除全部报名者的姓名和手机号，只保留打码后的形式。"
            "公开的中奖名单和审计记录不受影响；删除后无法再下载完整名单，且不可撤销。"
            "请输入评议项目编号以确认。"
        ),
        "erase_confirm_label": "评议项目编号（确认删除）",
        "erase_button": "删除个人信息",
        "erase_failed": "删除请求未能发出：{error}",
        "erased_line": "报名者的姓名和手机号已于 {time} 由 {who} 删除，只保留打码后的形式。",
        "error_not_drawn": "尚未抽奖：需先抽奖并发放奖品。",
        "error_confirm_mismatch": "评议项目编号不一致。",
        "error_details_erased": "报名者的个人信息已删除。",
        "audit_link": "公开审计记录",
        "state_upcoming": "尚未开始",
        "state_open": "投票中",
        "state_closed": "已结束",
        "no_lottery": "本项目不设抽奖",
        "state_awaiting_draw": "待抽奖",
        "state_drawn": "已开奖",
        "no_commitment": "尚未生成（投票尚未开始）",
        "no_winners": "无：没有符合条件的报名。",
        "no_reserves": "无：中奖之外没有剩余的符合条件的报名。",
        "loading": "正在加载…",
        "signed_in_as": "已登录：{who}",
        "no_polls": "评议目录中没有项目。",
        "unreachable": "无法连接抽奖服务：{error}",
        "draw_failed": "抽奖请求未能发出：{error}",
        "download_failed": "名单下载失败：{error}",
        "left": "（尚待处理：{left}）",
        "error_broker_unavailable": "暂时无法连接消息队列（Kafka），本次操作没有执行，请稍后重试。",
        "error_poll_open": "投票尚未结束，结束后才能抽奖。",
        "error_poll_settling": "投票刚刚结束，截止前提交的选票可能仍在传送中，请几秒后重试。",
        "error_pipeline_not_drained": "截止前收到的选票仍在处理中，请稍后重试。",
        "error_unauthorized": "请先登录。",
        "error_forbidden": "令牌无效，请重新登录。",
    },
    "en": {
        "title": "Public review · staff console",
        "switch_label": "中文",
        "switch_lang": "zh",
        "refresh": "Refresh",
        "sign_out": "Sign out",
        "sign_in": "Sign in",
        "token_label": "Staff token",
        "token_hint": (
            "The token stays in this browser tab only, and is forgotten when the tab closes."
        ),
        "fact_state": "State",
        "fact_page": "Voting page",
        "qr_show": "QR code (for articles and posters)",
        "qr_alt": "QR code of the voting page of {title}",
        "qr_download": "Download the QR code (PNG)",
        "fact_voting": "Voting",
        "fact_drawn": "Drawn",
        "drawn_line": "{time}, by {who}",
        "fact_prize": "Prize",
        "fact_entries": "Entries",
        "fact_commitment": "Commitment",
        "prize_line": "{prizes} × {prize}, {reserves} reserves",  # noqa: RUF001
        "entries_line": "{entries} ({eligible} with at least one day)",
        "count_heading": "Count",
        "count_private": (
            "This poll's count is published after the close; until then only staff see it."
        ),
        "col_option": "Rating",
        "col_votes": "Votes",
        "col_share": "Share",
        "count_total_one": "{n} vote in total",
        "count_total_other": "{n} votes in total",
        "count_live": "Live, as of {time}",
        "count_final": "Final",
        "count_unavailable": "The count cannot be read right now: {error}",
        "histogram_heading": "Entries by days voted",
        "histogram_label": "{days}d",
        "histogram_title": "{n} entries voted on {days} day(s)",
        "histogram_empty": "No entries yet.",
        "before_close": "The draw becomes available once voting has closed.",
        "draw_heading": "Draw",
        "draw_once": "The draw happens once and cannot be redone. Type the poll id to confirm.",
        "entropy_label": (
            "Optional public entropy (e.g. a closing index announced after the close)"
        ),
        "confirm_label": "Poll id",
        "draw_button": "Draw winners",
        "winners_heading": "Winners",
        "reserves_heading": "Reserves",
        "col_rank": "Rank",
        "col_entry": "Entry",
        "col_name": "Name",
        "col_phone": "Phone",
        "csv_button": "Download winners CSV (full details)",
        "erase_heading": "Erase entrants' personal details",
        "erase_explain": (
            "Once the prizes are delivered, erase every entrant's name and mobile number; "
            "only their masked forms stay. The public winners list and the audit record are "
            "unaffected; the full export is gone afterwards, and this cannot be undone. "
            "Type the poll id to confirm."
        ),
        "erase_confirm_label": "Poll id, to confirm the erasure",
        "erase_button": "Erase personal details",
        "erase_failed": "The erasure could not be requested: {error}",
        "erased_line": (
            "Entrants' names and numbers were erased on {time} by {who}; "
            "only their masked forms are kept."
        ),
        "error_not_drawn": "Not drawn yet: draw and deliver the prizes first.",
        "error_confirm_mismatch": "The poll id does not match.",
        "error_details_erased": "Entrants' personal details have been erased.",
        "audit_link": "Public audit record",
        "state_upcoming": "upcoming",
        "state_open": "open",
        "state_closed": "closed",
        "no_lottery": "this poll has no prize draw",
        "state_awaiting_draw": "awaiting draw",
        "state_drawn": "drawn",
        "no_commitment": "not fixed yet (voting has not opened)",
        "no_winners": "None: the draw had no eligible entries.",
        "no_reserves": "None: no eligible entry was left over.",
        "loading": "Loading…",
        "signed_in_as": "Signed in as {who}",
        "no_polls": "The catalog has no poll.",
        "unreachable": "The lottery service cannot be reached: {error}",
        "draw_failed": "The draw could not be requested: {error}",
        "download_failed": "The list could not be downloaded: {error}",
        "left": "(still on their way: {left})",
        "error_broker_unavailable": (
            "The message broker (Kafka) cannot be reached; nothing was done. Retry shortly."
        ),
        "error_poll_open": "Voting has not closed yet; the draw comes after the close.",
        "error_poll_settling": (
            "Voting has only just closed and votes cast before it may still be arriving; "
            "retry in a few seconds."
        ),
        "error_pipeline_not_drained": (
            "Votes received before the close are still being processed; retry shortly."
        ),
        "error_unauthorized": "Please sign in.",
        "error_forbidden": "That token is not valid; please sign in again.",
    },
}

# The ratings by their catalog ids, as the voting pages name them.
for _lang in LANGS:
    STRINGS[_lang].update({f"option_{o}": labels[_lang] for o, labels in OPTION_LABELS.items()})
