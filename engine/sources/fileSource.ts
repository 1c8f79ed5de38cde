// Bounded file source: JSON lines, CSV (csv-parse: quoted fields may span lines) or concatenated msgpack. Each file is a partition with its own
// watermark; batches rotate over the partitions. The position is each file's byte offset and line
// number plus whose turn it is, so a restored job reads exactly the batches an uninterrupted one would.
import { statSync } from "node:fs";
import { SourcePositionInvalid, SourceUnreadable } from "../errors.ts";
import { DEFAULT_MAX_LINE_BYTES, MAX_COLLECTION_ENTRIES, valueLimitViolation } from "../valueLimits.ts";
import { decodeJson, textPreview, type Decoding } from "./decoding.ts";
import { LineReader, type LinePosition } from "./lineReader.ts";
import { MsgpackReader } from "./msgpackReader.ts";
import { CsvReader } from "./csvReader.ts";
import type { Source, SourceBatch, SourceItem, SourceProgress } from "./source.ts";

export type FileFormat = "jsonl" | "csv" | "msgpack";

export type FileSourceOptions = {
  /** One file per partition. */
  paths: string[];
  format: FileFormat;
  /** CSV column names; default: read from each file's header line. */
  columns?: string[];
  /** CSV field delimiter. Default ",". */
  delimiter?: string;
  /** Longer lines (CSV: rows, which may span lines; msgpack: values) go to the dead-letter output, never held whole. Default 1 MiB. */
  maxLineBytes?: number;
};

type FilePosition = { partitions: LinePosition[]; turn: number };

/** One partition's reader: yields items until its file ends. */
type PartitionReader = {
  read(maxItems: number, into: SourceItem[]): boolean;
  position(): LinePosition;
  close(): void;
};

export class FileSource implements Source {
  private readers: PartitionReader[] = [];
  private isFinished: boolean[] = [];
  private turn = 0;
  private sizeBytes = 0;

  constructor(private readonly options: FileSourceOptions) {}

  get description(): string {
    return this.options.paths.join(", ");
  }

  get partitions(): number {
    return this.options.paths.length;
  }

  async open(position: unknown): Promise<void> {
    const restored = position as FilePosition | undefined;
    if (restored && restored.partitions.length !== this.partitions) {
      throw new SourcePositionInvalid(this.description, `checkpoint has ${restored.partitions.length} files, the pipeline ${this.partitions}`);
    }
    this.sizeBytes = 0;
    this.readers = this.options.paths.map((path, p) => this.openReader(path, p, restored?.partitions[p]));
    this.isFinished = this.readers.map(() => false);
    this.turn = restored?.turn ?? 0;
  }

  nextBatch(maxItems: number): SourceBatch {
    const items: SourceItem[] = [];
    const finishedPartitions: number[] = [];
    for (let tries = 0; tries < this.partitions && items.length === 0; tries++) {
      const p = this.turn;
      this.turn = (this.turn + 1) % this.partitions;
      if (this.isFinished[p]) continue;
      if (!this.readers[p].read(maxItems, items)) {
        this.isFinished[p] = true;
        finishedPartitions.push(p);
      }
    }
    return { items, finishedPartitions, isDone: this.isFinished.every(Boolean) };
  }

  /** `events.jsonl:42` (line 42), `events.msgpack@1024` (the value at byte 1024). */
  originOf(partition: number, at: number): string {
    return `${this.options.paths[partition]}${this.options.format === "msgpack" ? "@" : ":"}${at}`;
  }

  position(): FilePosition {
    return { partitions: this.readers.map((r) => r.position()), turn: this.turn };
  }

  /** Bytes read of the files' sizes when opened. */
  progress(): SourceProgress {
    return { done: this.readers.reduce((sum, r) => sum + r.position().offsetBytes, 0), total: this.sizeBytes };
  }

  async close(): Promise<void> {
    for (const reader of this.readers) reader.close();
  }

  private openReader(path: string, partition: number, from: LinePosition | undefined): PartitionReader {
    let stats;
    try {
      stats = statSync(path);
    } catch (error) {
      throw new SourceUnreadable(path, (error as Error).message);
    }
    // A pipe or a device cannot be read again from a recorded offset (and LMDB-style positional reads fail on it).
    if (!stats.isFile()) throw new SourceUnreadable(path, "is not a regular file (a pipe, a device or a directory): a source file must be one flusso can read again from a recorded position");
    const sizeBytes = stats.size;
    this.sizeBytes += sizeBytes;
    if (from && from.offsetBytes > sizeBytes) {
      throw new SourcePositionInvalid(path, `checkpoint is at byte ${from.offsetBytes} but the file has ${sizeBytes}: it was replaced`);
    }
    const maxLineBytes = this.options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    if (this.options.format === "msgpack") return new MsgpackReader(path, partition, from ?? { offsetBytes: 0, lineNo: 0 }, maxLineBytes);
    if (this.options.format === "jsonl") return lineItems(new LineReader(path, from ?? { offsetBytes: 0, lineNo: 0 }, maxLineBytes), partition, decodeJson);
    const csvOptions = { delimiter: this.options.delimiter ?? ",", maxRecordBytes: maxLineBytes };
    const rows = new CsvReader(path, from ?? { offsetBytes: 0, lineNo: 0 }, csvOptions);
    let columns = this.options.columns;
    if (!columns) {
      // The header is no event: read past it at the start; after a restore, read it from a reader of its own.
      const headerReader = from ? new CsvReader(path, { offsetBytes: 0, lineNo: 0 }, csvOptions) : rows;
      try {
        columns = readCsvHeader(headerReader);
      } finally {
        if (headerReader !== rows) headerReader.close();
      }
    }
    return csvItems(rows, partition, columns);
  }
}

function readCsvHeader(reader: CsvReader): string[] {
  const header = reader.readRecord();
  if (header === undefined || header.problem !== undefined || header.fields.length === 0) throw new SourcePositionInvalid(reader.path, "CSV file has no readable header line");
  return header.fields;
}

/** Each row of `rows` as a mapping of `columns`, or why it is none. */
function csvItems(rows: CsvReader, partition: number, columns: string[]): PartitionReader {
  // A row is a flat mapping of the columns: only a header of very many columns can be over the limits.
  const isWide = columns.length > MAX_COLLECTION_ENTRIES;
  return {
    read(maxItems, into) {
      for (let n = 0; n < maxItems; n++) {
        const row = rows.readRecord(columns.length);
        if (row === undefined) return false;
        const origin = `${rows.path}:${row.lineNo}`;
        if (row.problem !== undefined) {
          into.push({ partition, error: row.problem, raw: row.raw, origin });
          continue;
        }
        const value: Record<string, string> = {};
        // An empty CSV field is an absent value, so optional fields behave as in JSON.
        for (let c = 0; c < columns.length; c++) if (row.fields[c] !== "") value[columns[c]] = row.fields[c];
        const violation = isWide ? valueLimitViolation(value) : undefined;
        if (violation === undefined) into.push({ partition, value, at: row.lineNo });
        else into.push({ partition, error: violation, raw: textPreview(row.fields.join(",")), origin });
      }
      return true;
    },
    position: () => rows.next,
    close: () => rows.close(),
  };
}

/** A line's value, or why it has none (`raw`: what the dead letter shows, default the whole line). */
type LineParser = (text: string) => Decoding;

function lineItems(lines: LineReader, partition: number, parse: LineParser): PartitionReader {
  return {
    read(maxItems, into) {
      for (let n = 0; n < maxItems; n++) {
        const line = lines.readLine();
        if (line === undefined) return false;
        const origin = `${lines.path}:${line.lineNo}`;
        if (line.problem !== undefined) {
          into.push({ partition, error: line.problem, raw: line.preview, origin });
          continue;
        }
        if (line.text.trim() === "") continue;
        const parsed = parse(line.text);
        if ("error" in parsed) into.push({ partition, error: parsed.error, raw: parsed.raw ?? line.text, origin });
        else into.push({ partition, value: parsed.value, at: line.lineNo });
      }
      return true;
    },
    position: () => lines.next,
    close: () => lines.close(),
  };
}
