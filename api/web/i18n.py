"""The driver page's languages: English and Simplified Chinese, one message catalogue each,
and the formats of numbers, data amounts (1 MB = 1,048,576 bytes) and dates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from flowbill.units import MB

LANGUAGES = ("en", "zh")
DEFAULT = "en"
LANG_COOKIE = "flowbill_lang"

EN: dict[str, str] = {
    "html_lang": "en",
    "title": "My data",
    "brand": "Flowbill",
    "signed_in_as": "Signed in as {name}",
    "sign_out": "Sign out",
    "language": "Language",
    "sign_in_title": "Sign in",
    "sign_in_intro": "Paste your API key to see your vehicles, cards and wallet.",
    "api_key": "API key",
    "sign_in": "Sign in",
    "sign_in_link_hint": "You can also open a one-time sign-in link from the app.",
    "signed_out": "You are signed out.",
    "sign_out_everywhere": "Sign out everywhere",
    "signed_out_everywhere": "You are signed out on every browser and device.",
    "link_sign_in_as": "Sign in to the driver page as {name}?",
    "link_sign_in_hint": "Continue only if you asked for this link: it signs this browser in"
    " to that account.",
    "link_unusable_hint": "Sign in with your API key, or ask the app for a new link.",
    "month": "Month",
    "previous_month": "Previous month",
    "next_month": "Next month",
    "vehicles": "Vehicles and SIMs",
    "no_vehicles": "No vehicle is registered to you yet.",
    "invitations": "Vehicles waiting for your answer",
    "invitation": "{model} {vin}: its automaker named you as its driver. Your wallet pays"
    " nothing for it unless you accept.",
    "accept": "Accept",
    "decline": "Decline",
    "vehicle": "Vehicle {vin} ({model})",
    "sim": "SIM {iccid}",
    "sim_details": "This SIM month by month",
    "back": "Back to all vehicles",
    "usage_by_app": "Usage by app in {month}, by who paid",
    "usage_by_day": "Usage day by day in {month}",
    "app": "App",
    "day": "Day",
    "total": "Total",
    "me": "Me",
    "paid_by_me": "Paid by me: {wallet} from my wallet, {overage} overage",
    "no_usage": "No usage recorded this month.",
    "blocked_apps": "Blocked apps (nobody pays for them now): {apps}",
    "no_blocked_apps": "No app is blocked.",
    "coverage_unknown": "Coverage not computed yet.",
    "charts_unavailable": "Charts are unavailable; the tables below hold the same numbers.",
    "wallet": "My wallet",
    "balance": "Balance",
    "expiring_soon": "Expiring within 30 days",
    "lots": "Data lots",
    "lot_line": "{amount} expire on {day}",
    "no_lots": "Your wallet is empty.",
    "source": "Source",
    "history": "History",
    "no_history": "Nothing happened in your wallet yet.",
    "when": "When",
    "what": "What",
    "amount": "Amount",
    "top_up_title": "Top up a phone number",
    "carrier": "Carrier",
    "package": "Package (MB)",
    "packages_of": "{carrier}: {packages} MB",
    "phone": "Phone number",
    "top_up": "Top up",
    "no_carriers": "No carrier is available.",
    "redeem_title": "Redeem data",
    "item": "Item",
    "item_line": "{name}: {price}",
    "item_money": "{price} + {money} {currency}",
    "quantity": "Quantity",
    "carrier_optional": "Carrier (for items priced per carrier)",
    "none": "none",
    "redeem": "Redeem",
    "no_items": "Nothing to redeem right now.",
    "done_top_up": "Top-up of {mb} MB to {phone} requested ({state}).",
    "done_redeem": "Redeemed {quantity} × {name} for {amount} ({state}).",
    "error": "Error",
    "not_found": "Not found",
    "not_found_detail": "There is nothing here for you.",
    "kind_grant": "Granted",
    "kind_check_in": "Check-in",
    "kind_spend": "Spent",
    "kind_refund": "Refunded",
    "kind_expiry": "Expired",
    "kind_top_up": "Phone top-up",
    "kind_transfer_in": "Moved in from carrier",
    "kind_exchange": "Redeemed",
    "payer_usage": "Usage paid by {payer}",
}

ZH: dict[str, str] = {
    "html_lang": "zh-CN",
    "title": "我的流量",
    "brand": "Flowbill",
    "signed_in_as": "已登录：{name}",
    "sign_out": "退出登录",
    "language": "语言",
    "sign_in_title": "登录",
    "sign_in_intro": "粘贴您的 API 密钥，查看您的车辆、流量卡和钱包。",
    "api_key": "API 密钥",
    "sign_in": "登录",
    "sign_in_link_hint": "您也可以打开应用中的一次性登录链接。",
    "signed_out": "您已退出登录。",
    "sign_out_everywhere": "在所有设备上退出",
    "signed_out_everywhere": "您已在所有浏览器和设备上退出登录。",
    "link_sign_in_as": "以 {name} 的身份登录司机页面？",
    "link_sign_in_hint": "仅当此链接是您本人申请的时才继续：它会让此浏览器登录该账户。",
    "link_unusable_hint": "请使用 API 密钥登录，或在应用中重新获取链接。",
    "month": "月份",
    "previous_month": "上个月",
    "next_month": "下个月",
    "vehicles": "车辆与 SIM 卡",
    "no_vehicles": "您名下还没有车辆。",
    "invitations": "等待您答复的车辆",
    "invitation": "{model} {vin}：车企将您登记为车主。在您接受之前，您的钱包不会为它支付任何流量。",
    "accept": "接受",
    "decline": "拒绝",
    "vehicle": "车辆 {vin}（{model}）",
    "sim": "SIM 卡 {iccid}",
    "sim_details": "此 SIM 卡的月度用量",
    "back": "返回全部车辆",
    "usage_by_app": "{month} 各应用用量（按付费方）",
    "usage_by_day": "{month} 每日用量",
    "app": "应用",
    "day": "日期",
    "total": "合计",
    "me": "我",
    "paid_by_me": "我支付：钱包 {wallet}，超额 {overage}",
    "no_usage": "本月暂无用量记录。",
    "blocked_apps": "已停用的应用（目前无人付费）：{apps}",
    "no_blocked_apps": "没有被停用的应用。",
    "coverage_unknown": "尚未计算付费情况。",
    "charts_unavailable": "图表不可用；下方表格包含相同的数据。",
    "wallet": "我的钱包",
    "balance": "余额",
    "expiring_soon": "30 天内到期",
    "lots": "流量包",
    "lot_line": "{amount} 将于 {day} 到期",
    "no_lots": "您的钱包是空的。",
    "source": "来源",
    "history": "记录",
    "no_history": "您的钱包还没有任何记录。",
    "when": "时间",
    "what": "事项",
    "amount": "数量",
    "top_up_title": "为手机号充值流量",
    "carrier": "运营商",
    "package": "流量包（MB）",
    "packages_of": "{carrier}：{packages} MB",
    "phone": "手机号",
    "top_up": "充值",
    "no_carriers": "暂无可用的运营商。",
    "redeem_title": "兑换",
    "item": "商品",
    "item_line": "{name}：{price}",
    "item_money": "{price} + {money} {currency}",
    "quantity": "数量",
    "carrier_optional": "运营商（按运营商定价的商品需选择）",
    "none": "无",
    "redeem": "兑换",
    "no_items": "暂无可兑换的商品。",
    "done_top_up": "已提交向 {phone} 充值 {mb} MB（{state}）。",
    "done_redeem": "已兑换 {quantity} × {name}，使用 {amount}（{state}）。",
    "error": "错误",
    "not_found": "未找到",
    "not_found_detail": "这里没有属于您的内容。",
    "kind_grant": "获赠",
    "kind_check_in": "签到",
    "kind_spend": "使用",
    "kind_refund": "退回",
    "kind_expiry": "过期",
    "kind_top_up": "手机充值",
    "kind_transfer_in": "从运营商转入",
    "kind_exchange": "兑换",
    "payer_usage": "由 {payer} 支付的用量",
}

CATALOGUES: dict[str, Mapping[str, str]] = {"en": EN, "zh": ZH}

# Problem titles shown above the API's `detail`, by problem type (the English title is the
# API's own).
ZH_PROBLEM_TITLES: dict[str, str] = {
    "invalid-input": "输入无效",
    "insufficient-balance": "钱包余额不足",
    "package-not-offered": "该运营商不提供此流量包",
    "carrier-not-found": "未找到运营商",
    "carrier-required": "请选择运营商",
    "item-not-found": "未找到商品",
    "out-of-stock": "商品已售罄",
    "item-limit-reached": "已达到购买上限",
    "user-limit-reached": "已达到购买上限",
    "idempotency-key-reused": "表单已提交过",
    "invalid-amount": "数量无效",
    "csrf": "表单已过期",
    "sign-in-refused": "登录失败",
    "sign-in-link-expired": "此登录链接已失效",
    "not-found": "未找到",
    "conflict": "冲突",
    "unavailable": "服务暂不可用",
}

_ZH_MONTH = "{y}年{m}月"
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # fmt: skip


def negotiate(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The page's language: `?lang=`, else the cookie the switch set, else the browser's
    Accept-Language (the first of our languages it names), else English."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else DEFAULT


@dataclass(frozen=True, slots=True)
class Translator:
    """Messages and formats of one language, handed to the templates as `t`."""

    lang: str
    zone: ZoneInfo

    def __call__(self, key: str, **values: object) -> str:
        text = CATALOGUES[self.lang].get(key) or EN.get(key) or key
        return text.format(**values) if values else text

    def number(self, value: float, decimals: int = 0) -> str:
        return f"{value:,.{decimals}f}"

    def mb(self, data_bytes: int) -> str:
        """Bytes as MB with two decimals: 1 MB = 1,048,576 bytes."""
        return f"{data_bytes / MB:,.2f} MB"

    def day(self, value: date | datetime, *, year: bool = True) -> str:
        if isinstance(value, datetime):
            value = value.astimezone(self.zone).date()
        if self.lang == "zh":
            return (
                f"{value.year}年{value.month}月{value.day}日"
                if year
                else (f"{value.month}月{value.day}日")
            )
        short = f"{value.day} {_EN_MONTHS[value.month - 1]}"
        return f"{short} {value.year}" if year else short

    def moment(self, value: datetime) -> str:
        local = value.astimezone(self.zone)
        return f"{self.day(local)} {local:%H:%M}"

    def month(self, first_day: date) -> str:
        if self.lang == "zh":
            return _ZH_MONTH.format(y=first_day.year, m=first_day.month)
        return f"{_EN_MONTHS[first_day.month - 1]} {first_day.year}"

    def history_kind(self, kind: str) -> str:
        key = f"kind_{kind}"
        return self(key) if key in EN else kind

    def problem_title(self, problem_type: str, title: str) -> str:
        if self.lang == "zh":
            return ZH_PROBLEM_TITLES.get(problem_type.rsplit("/", 1)[-1], title)
        return title
