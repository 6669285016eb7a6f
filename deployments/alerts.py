"""Automations that alert on pgpitr's events: ``python -m deployments.alerts WEBHOOK_URL``.

Creates (or replaces) a webhook block named ``pgpitr-alerts`` and four automations that notify
through it, for every cluster (resource ``pgpitr.cluster.*``).  The block POSTs
``{"text": SUBJECT\nBODY}``, which Slack's (and Mattermost's) incoming webhooks take and any
other receiver can read; the URL is kept as the block's secret (a Slack webhook URL is one):

- a backup failed (``pgpitr.backup.failed``);
- WAL archiving falls behind (``pgpitr.wal.archiving-behind``, from the window refresh);
- no backup completed for 8 days (no ``pgpitr.backup.completed`` per cluster: the weekly
  schedule missed a run);
- a scheduled backup is Late (Prefect's ``prefect.flow-run.Late`` of a ``backup`` run, raised by
  the server's late-runs service: no agent serves its host, ``pgpitr cluster describe`` says the
  same).

Why not Prefect's ``SlackWebhook`` block: it hands the URL to apprise, which knows only
``hooks.slack.com`` URLs; any other webhook was accepted here and never notified.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

BLOCK = "pgpitr-alerts"
#: the cluster as HOST/NAME (events of clusters on other hosts look alike otherwise)
CLUSTER = "{{ event.resource['pgpitr.host'] }}/{{ event.resource['pgpitr.cluster'] }}"


def automations(block_id: object) -> list[Automation]:
    def notify(subject: str, body: str) -> SendNotification:
        return SendNotification(block_document_id=block_id, subject=subject, body=body)

    return [
        Automation(
            name="pgpitr: backup failed",
            trigger=EventTrigger(
                expect={"pgpitr.backup.failed"},
                match={"prefect.resource.id": "pgpitr.cluster.*"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[
                notify(
                    f"pgpitr: a backup of {CLUSTER} failed",
                    "Backup {{ event.payload.name }} of " + CLUSTER + " failed: "
                    "{{ event.payload.reason }}",
                )
            ],
        ),
        Automation(
            name="pgpitr: WAL archiving behind",
            trigger=EventTrigger(
                expect={"pgpitr.wal.archiving-behind"},
                match={"prefect.resource.id": "pgpitr.cluster.*"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[
                notify(
                    f"pgpitr: WAL archiving of {CLUSTER} is behind",
                    "{{ event.payload.reason }}. The recoverable window stops growing until "
                    "archiving catches up: check the repository and the server log.",
                )
            ],
        ),
        Automation(
            name="pgpitr: no backup for 8 days",
            trigger=EventTrigger(
                expect={"pgpitr.backup.completed"},
                match={"prefect.resource.id": "pgpitr.cluster.*"},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(days=8),
            ),
            actions=[
                notify(
                    "pgpitr: no backup completed for 8 days",
                    "A cluster that had backups has none completed for 8 days: "
                    "{{ event.resource['prefect.resource.id'] }}",
                )
            ],
        ),
        Automation(
            name="pgpitr: scheduled backup late",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Late"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.role": "flow", "prefect.resource.name": "backup"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[
                notify(
                    "pgpitr: a scheduled backup is late",
                    "The scheduled backup of cluster {{ flow_run.parameters['cluster'] }} "
                    "(run {{ flow_run.name }} of backup/{{ deployment.name }}) did not start "
                    "on time: no agent serves its host. Start the agent there with "
                    "`pgpitr agent start`; `pgpitr cluster describe` shows the late runs.",
                )
            ],
        ),
    ]


def webhook(webhook_url: str) -> CustomWebhookNotificationBlock:
    """The notification block: POST {"text": …} to WEBHOOK_URL, the URL kept secret."""
    return CustomWebhookNotificationBlock(
        name=BLOCK,
        url="{{webhook_url}}",
        secrets={"webhook_url": webhook_url},
        json_data={"text": "{{subject}}\n{{body}}"},
    )


def create(webhook_url: str) -> list[str]:
    """The block and the automations, replacing those of the same names; their names."""
    block_id = webhook(webhook_url).save(BLOCK, overwrite=True)
    made = []
    for automation in automations(block_id):
        try:
            Automation.read(name=automation.name).delete()
        except ValueError:  # none of that name yet
            pass
        made.append(automation.create().name)
    return made


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m deployments.alerts WEBHOOK_URL")
    for name in create(sys.argv[1]):
        print(f"automation {name!r} created")
