"""Vietnamese labels for statuses shown to officers (console, pages, reports)."""

BROADCAST_VI = {
    "preparing": "đang chuẩn bị", "on_air": "đang phát", "completed": "đã phát xong", "partial": "phát một phần",
    "failed": "lỗi", "not_aired": "không phát", "missed": "bị lỡ",
}
DELIVERY_VI = {
    "issued": "đã gửi", "received": "đã nhận", "ready": "sẵn sàng", "playing": "đang phát", "finished": "phát xong",
    "failed": "lỗi", "rejected": "từ chối", "expired": "hết hạn", "missed": "bị lỡ",
}
