"""Every answer the API gives, as models (``Record``: open, a client keeps fields a newer server adds): they give
``/openapi.json`` its answer schemas and ``web/client.py`` its return types. Class names are the schemas' names.

The models live by subject in records_*.py; ``RECORDS`` lists the answers that operations name (the models they
contain come with them).
"""
from __future__ import annotations

from .base import Record
from .records_books import (Book, BookAction, BookList, BookListItem, BookPlan, BookQuality, BookSubmitted,
                            BookSummary, ChapterState, ChunkRetry, ChunkState, ParsedBook, ParsedChapter,
                            PlannedChapter, Regenerated, RegeneratedChunk, SubmittedLexiconEntry)
from .records_jobs import (KINDS, STATUSES, BookWord, BookWords, CancelResult, Error, ErrorDetail, Job, JobDetail,
                           JobLinks, JobList, JobListItem, JobRecord, Purged, QueueLengths, Stats, StatsBucket,
                           StatusCounts, TextPlan, WaitPending, Word, Words, absent, hash_types)
from .records_lexicon import (Lexicon, LexiconCleared, LexiconEntries, LexiconEntry, LexiconEntryDeleted,
                              LexiconPreview)
from .records_openai import CaptionedSpeechResponse, Model, ModelList, WordTimestamp
from .records_service import (DiskUsage, EngineHealth, FolderUsage, Health, HealthDown, HealthStatus, RedisDown,
                              RedisHealth, RedisUsage, RetentionSweep, Storage, Worker, WorkerBatch)
from .records_voices import (Engine, EngineModel, EngineParam, ModelLanguage, ModelParam, SavedVoice,
                             SavedVoiceList, Voice, VoiceDeleted, VoiceList)

RECORDS: tuple[type[Record], ...] = (
    Error, JobLinks, WaitPending, Job, JobDetail, Words, BookWords, JobList, Purged, Stats, Storage, TextPlan,
    CancelResult, Voice, SavedVoice, VoiceList, SavedVoiceList, VoiceDeleted, Engine, Worker, Health, HealthStatus,
    HealthDown, BookSubmitted, BookSummary, Book, BookList, BookAction, Regenerated, Lexicon, LexiconEntry,
    LexiconEntries, LexiconCleared, LexiconEntryDeleted, LexiconPreview, CaptionedSpeechResponse, WordTimestamp,
    Model, ModelList)

__all__ = ["KINDS", "RECORDS", "STATUSES", "Book", "BookAction", "BookList", "BookListItem", "BookPlan",
           "BookQuality", "BookSubmitted", "BookSummary", "BookWord", "BookWords", "CancelResult",
           "CaptionedSpeechResponse", "ChapterState", "ChunkRetry", "ChunkState", "DiskUsage", "Engine",
           "EngineHealth", "EngineModel", "EngineParam", "Error", "ErrorDetail", "FolderUsage", "Health",
           "HealthDown", "HealthStatus", "Job", "JobDetail", "JobLinks", "JobList", "JobListItem", "JobRecord",
           "Lexicon", "LexiconCleared", "LexiconEntries", "LexiconEntry", "LexiconEntryDeleted", "LexiconPreview",
           "Model", "ModelLanguage", "ModelList", "ModelParam", "ParsedBook", "ParsedChapter", "PlannedChapter",
           "Purged", "QueueLengths", "Record", "RedisDown", "RedisHealth", "RedisUsage", "Regenerated",
           "RegeneratedChunk", "RetentionSweep", "SavedVoice", "SavedVoiceList", "Stats", "StatsBucket",
           "StatusCounts", "Storage", "SubmittedLexiconEntry", "TextPlan", "Voice", "VoiceDeleted", "VoiceList",
           "WaitPending", "Word", "WordTimestamp", "Words", "Worker", "WorkerBatch", "absent", "hash_types"]
